#!/usr/bin/env python3
"""Print the argocd-cm ConfigMap that installs deploy/argocd's health check and actions for
ProgressiveRollout: the block docs/operations.md shows (tests/unit/test_argocd_lua.py holds
the two together, so after editing a Lua file run this and paste its output there).

    python3 hack/argocd-cm.py | kubectl patch configmap argocd-cm -n argocd --patch-file /dev/stdin
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP, KIND = "tidegate.io", "ProgressiveRollout"
SCRIPTS = ROOT / "deploy" / "argocd" / GROUP / KIND
# The order the actions are listed in (Argo CD shows the ones discovery.lua enables).
ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")


def _block(text: str, indent: int) -> list[str]:
    """`text` as the lines of a YAML literal block indented by `indent` spaces."""
    pad = " " * indent
    return [pad + line if line else "" for line in text.rstrip("\n").split("\n")]


def render() -> str:
    key = f"{GROUP}_{KIND}"
    lines = [
        "apiVersion: v1",
        "kind: ConfigMap",
        "metadata:",
        "  name: argocd-cm",
        "  namespace: argocd",
        "data:",
        f"  resource.customizations.health.{key}: |",
        *_block((SCRIPTS / "health.lua").read_text(), 4),
        f"  resource.customizations.actions.{key}: |",
        "    discovery.lua: |",
        *_block((SCRIPTS / "actions" / "discovery.lua").read_text(), 6),
        "    definitions:",
    ]
    for action in ACTIONS:
        lines += [
            f"      - name: {action}",
            "        action.lua: |",
            *_block((SCRIPTS / "actions" / action / "action.lua").read_text(), 10),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
