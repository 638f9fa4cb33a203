"""The Argo CD health check and actions (deploy/argocd) on live rollouts: health.lua and
discovery.lua evaluated in real Lua on the object as the API server returns it at each
phase, and the actions applied as Argo CD applies them (the object the script returns, sent
as a merge patch), with the operator acting on what they wrote.

With TIDEGATE_RECORD_ARGOCD_FIXTURES=1 the objects are also written to
tests/fixtures/argocd/, which tests/unit/test_argocd_lua.py checks on every `make unit`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from rollout_support import Shop, set_version

from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

sys.path.insert(0, str(Path(__file__).parents[1]))
import argocd_lua  # (tests/argocd_lua.py, shared with the unit test)

RECORD = os.environ.get("TIDEGATE_RECORD_ARGOCD_FIXTURES") == "1"


def _example_with_steps(steps: list[dict[str, Any]]) -> str:
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["strategy"] = {"canary": {"steps": steps}}
    return yaml.safe_dump(rollout)


# Two analysed steps before a `pause: {}`: time to pause and resume by spec on the way.
PAUSING_ROLLOUT = _example_with_steps(
    [{"setWeight": 10}, {"analysis": {"iterations": 2}}, {"pause": {}}, {"setWeight": 50}]
)

# A rollout whose target Deployment does not exist: Degraded, reason TargetNotFound.
GHOST_ROLLOUT = """
apiVersion: tidegate.io/v1alpha1
kind: ProgressiveRollout
metadata:
  name: ghost
spec:
  targetRef: {name: ghost}
  service: {name: ghost, port: 80}
  trafficRouting: {gatewayAPI: {httpRoute: ghost}}
  strategy: {canary: {steps: [{setWeight: 50}]}}
"""


def live(shop: Shop, name: str = "shop") -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        shop.kubectl.check("get", "-n", shop.namespace, f"pro/{name}", "-o", "json")
    )
    return found


def seen(obj: dict[str, Any]) -> bool:
    """Whether the operator has acted on the object's current spec."""
    return obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]


def expect(state: str, obj: dict[str, Any]) -> None:
    """Argo CD's view of `obj` is what `state` expects; recorded when asked to."""
    status, enabled = argocd_lua.EXPECTED[state]
    health = argocd_lua.health(obj)
    assert health["status"] == status, (state, health, obj.get("status"))
    assert health["message"], (state, health)
    assert argocd_lua.enabled_actions(obj) == enabled, (state, argocd_lua.discovery(obj))
    if RECORD:
        argocd_lua.save_fixture(state, obj)


def run_action(shop: Shop, action: str, name: str = "shop") -> dict[str, Any]:
    """What Argo CD does for `action`: the script on the live object, the difference sent as
    a merge patch. Returns the object as the patch left it."""
    before = live(shop, name)
    assert action in argocd_lua.enabled_actions(before), (action, before.get("status"))
    patch = argocd_lua.merge_patch(before, argocd_lua.act(action, before))
    assert patch, f"{action} changed nothing"
    patched = shop.kubectl.check(
        "patch", "-n", shop.namespace, f"pro/{name}", "--type=merge",
        "-p", json.dumps(patch), "-o", "json",
    )  # fmt: skip
    found: dict[str, Any] = json.loads(patched)
    return found


def wait_live(shop: Shop, what: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(lambda: live(shop), what, 90, until=check)
    return found


def test_paused_by_spec_and_by_a_step_then_promoted_through_argocd_actions(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(PAUSING_ROLLOUT)
    expect("initialized", live(shop))

    set_version(shop.kubectl, shop.namespace, "1.1.0")
    progressing = wait_live(
        shop, "phase Progressing", lambda o: seen(o) and o["status"].get("phase") == "Progressing"
    )
    expect("progressing", progressing)

    # The patch's answer is the object before the operator saw the change.
    expect("pause-not-yet-observed", run_action(shop, "pause"))
    paused = wait_live(
        shop,
        "paused by spec, as the operator saw it",
        lambda o: seen(o) and o["status"].get("phase") == "Paused",
    )
    assert paused["spec"]["paused"] is True
    assert paused["status"]["message"] == "Rollout paused: spec.paused is true"
    expect("paused-by-spec", paused)

    run_action(shop, "resume")
    awaiting = wait_live(
        shop,
        "the pause step, awaiting promotion",
        lambda o: seen(o) and o["status"].get("phase") == "Paused" and not o["spec"]["paused"],
    )
    assert "paused until promoted" in awaiting["status"]["message"], awaiting["status"]
    expect("paused-awaiting-promotion", awaiting)

    promoted = run_action(shop, "promote")
    assert promoted["metadata"]["annotations"]["tidegate.io/promote"] == argocd_lua.REQUESTER
    # On to Succeeded, Argo CD's view checked on every object seen on the way.
    phases: list[str] = []

    def watched() -> dict[str, Any]:
        obj = live(shop)
        phase = obj["status"].get("phase")
        if not phases or phases[-1] != phase:
            phases.append(phase)
            if phase == "Promoting":
                expect("promoting", obj)
            elif phase != "Succeeded" and seen(obj):
                assert argocd_lua.health(obj)["status"] in {"Progressing", "Suspended"}, obj
        return obj

    succeeded = wait_until(
        watched, "phase Succeeded", 120, until=lambda o: o["status"].get("phase") == "Succeeded"
    )
    assert "Failed" not in phases, phases
    expect("succeeded", succeeded)
    # The operator took Argo CD's request and removed it.
    assert "tidegate.io/promote" not in succeeded["metadata"].get("annotations", {})


def test_failed_rollout_and_missing_target_are_degraded(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop()
    shop.kubectl.check("apply", "-n", shop.namespace, "-f", "-", stdin=GHOST_ROLLOUT)
    ghost = wait_until(
        lambda: live(shop, "ghost"),
        "Degraded TargetNotFound",
        60,
        until=lambda o: any(
            c["type"] == "Degraded" and c["status"] == "True" and c["reason"] == "TargetNotFound"
            for c in o.get("status", {}).get("conditions", [])
        ),
    )
    expect("target-not-found", ghost)
    assert "does not exist" in argocd_lua.health(ghost)["message"]

    set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
    failed = wait_live(shop, "phase Failed", lambda o: o["status"].get("phase") == "Failed")
    assert 'metric "error-rate"' in argocd_lua.health(failed)["message"]
    expect("failed", failed)


def test_aborted_then_retried_and_promoted_fully_through_argocd_actions(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(PAUSING_ROLLOUT)
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    wait_live(
        shop, "phase Progressing", lambda o: seen(o) and o["status"].get("phase") == "Progressing"
    )
    run_action(shop, "abort")
    aborted = wait_live(shop, "phase Aborted", lambda o: o["status"].get("phase") == "Aborted")
    assert aborted["status"]["canaryWeight"] == 0
    assert "asked by argocd" in argocd_lua.health(aborted)["message"]
    expect("aborted", aborted)

    run_action(shop, "retry")
    retried = wait_live(
        shop,
        "the revision rolled out again",
        lambda o: (
            o["status"].get("phase") == "Progressing"
            and o["status"].get("rolloutStartedAt") != aborted["status"]["rolloutStartedAt"]
        ),
    )
    assert retried["status"]["canaryRevision"] == aborted["status"]["canaryRevision"]
    run_action(shop, "promote-full")
    succeeded = wait_live(
        shop, "phase Succeeded", lambda o: o["status"].get("phase") == "Succeeded"
    )
    assert argocd_lua.health(succeeded)["status"] == "Healthy"
    for request in ("tidegate.io/abort", "tidegate.io/retry", "tidegate.io/promote-full"):
        assert request not in succeeded["metadata"].get("annotations", {})
