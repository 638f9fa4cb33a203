"""What identifies a version: the digest of a Deployment's pod template."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def template_revision(template: dict[str, Any]) -> str:
    """A short, stable digest of a pod template: the revision tidegate rolls out."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


class ReleaseUnknown(ValueError):
    """The target does not say which release it is (spec.waves.release: annotation:<key>)."""


def release_of(mode: str, deployment: dict[str, Any]) -> str:
    """What identifies the Deployment's version across clusters, as spec.waves.release says.

    The mode is part of the answer, so that two regions set up differently never take each
    other's releases for the same one.
    """
    template = deployment["spec"]["template"]
    if mode == "template":
        return f"template:{template_revision(template)}"
    if mode == "images":
        containers = template.get("spec", {}).get("containers") or []
        return "images:" + ",".join(f"{c.get('name', '')}={c.get('image', '')}" for c in containers)
    key = mode.removeprefix("annotation:")
    for meta in (template.get("metadata") or {}, deployment.get("metadata") or {}):
        value = (meta.get("annotations") or {}).get(key)
        if value is not None:
            return f"annotation:{key}={value}"
    raise ReleaseUnknown(
        f"spec.waves.release is {mode}, but neither the target's pod template nor the target "
        f"has the annotation {key}"
    )
