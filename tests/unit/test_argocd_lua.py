"""deploy/argocd's health check and actions, in real Lua (in-process), on the live objects
tests/e2e/test_argocd_health.py recorded, and the argocd-cm block of docs/operations.md
held to the Lua files."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml

from argocd_lua import (
    ACTIONS,
    ANNOTATION_ACTIONS,
    EXPECTED,
    HEALTH_STATUSES,
    OPTIONAL,
    REQUESTER,
    SPEC_ACTIONS,
    act,
    discovery,
    enabled_actions,
    fixture_names,
    health,
    load_fixture,
    merge_patch,
    normal,
)
from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    RolloutPhase,
)

ROOT = Path(__file__).parents[2]
RECORDED = fixture_names()


def test_every_expected_state_was_recorded_and_nothing_else() -> None:
    assert set(EXPECTED) - OPTIONAL <= set(RECORDED) <= set(EXPECTED)


def test_annotation_actions_write_the_apis_request_annotations() -> None:
    assert ANNOTATION_ACTIONS == {
        "promote": PROMOTE_ANNOTATION,
        "promote-full": PROMOTE_FULL_ANNOTATION,
        "abort": ABORT_ANNOTATION,
        "retry": RETRY_ANNOTATION,
    }
    assert set(ACTIONS) == set(ANNOTATION_ACTIONS) | set(SPEC_ACTIONS)


@pytest.mark.parametrize("name", RECORDED)
def test_health_of_a_recorded_object(name: str) -> None:
    obj = load_fixture(name)
    found = health(obj)
    assert set(found) == {"status", "message"}
    assert found["status"] in HEALTH_STATUSES
    assert found["status"] == EXPECTED[name][0], found
    assert found["message"]
    # The operator's own words when they are current (a stale or absent status excepted).
    message = obj.get("status", {}).get("message")
    if message and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
        assert found["message"] == message


@pytest.mark.parametrize("name", RECORDED)
def test_actions_offered_for_a_recorded_object(name: str) -> None:
    offered = discovery(load_fixture(name))
    assert set(offered) == set(ACTIONS)
    assert all(isinstance(action["disabled"], bool) for action in offered.values())
    assert enabled_actions(load_fixture(name)) == EXPECTED[name][1]


@pytest.mark.parametrize("name", RECORDED)
@pytest.mark.parametrize("action", ACTIONS)
def test_each_action_changes_only_its_own_field(name: str, action: str) -> None:
    before = load_fixture(name)
    after = act(action, before)
    if action in ANNOTATION_ACTIONS:
        expected = {"metadata": {"annotations": {ANNOTATION_ACTIONS[action]: REQUESTER}}}
    else:
        expected = {"spec": {"paused": SPEC_ACTIONS[action]}}
    if before["spec"].get("paused", False) == SPEC_ACTIONS.get(action):
        expected = {}  # already so
    assert merge_patch(before, after) == expected
    # Nothing else moved (as far as a trip through Lua can tell: [] comes back as {}).
    before_rest, after_rest = normal(before), normal(after)
    for part in ("metadata", "spec"):
        before_rest[part] = {k: v for k, v in before_rest[part].items() if k != "annotations"}
        after_rest[part] = {k: v for k, v in after_rest[part].items() if k != "annotations"}
    before_rest["spec"].pop("paused", None)
    after_rest["spec"].pop("paused", None)
    assert after_rest == before_rest


def test_annotation_actions_keep_other_annotations_and_work_without_any() -> None:
    obj = load_fixture("paused-awaiting-promotion")
    obj["metadata"]["annotations"] = {"team": "shop"}
    after = act("promote", obj)
    assert after["metadata"]["annotations"] == {"team": "shop", PROMOTE_ANNOTATION: REQUESTER}
    obj["metadata"].pop("annotations")
    assert act("abort", obj)["metadata"]["annotations"] == {ABORT_ANNOTATION: REQUESTER}


def with_phase(name: str, phase: str | None, paused: bool = False) -> dict[str, Any]:
    obj = load_fixture(name)
    obj["spec"]["paused"] = paused
    if phase is None:
        obj["status"].pop("phase", None)
    else:
        obj["status"]["phase"] = phase
    return obj


# Every phase, paused or not, on a current status without a Degraded condition.
PHASE_HEALTH = {
    RolloutPhase.INITIALIZING: "Progressing",
    RolloutPhase.INITIALIZED: "Healthy",
    RolloutPhase.PROGRESSING: "Progressing",
    RolloutPhase.PAUSED: "Suspended",
    RolloutPhase.PROMOTING: "Progressing",
    RolloutPhase.SUCCEEDED: "Healthy",
    RolloutPhase.FAILED: "Degraded",
    RolloutPhase.ABORTED: "Degraded",
    RolloutPhase.CANCELLED: "Healthy",
    RolloutPhase.WAITING_FOR_WAVE: "Progressing",
}


@pytest.mark.parametrize("phase", list(RolloutPhase))
@pytest.mark.parametrize("paused", [False, True])
def test_health_of_every_phase(phase: RolloutPhase, paused: bool) -> None:
    obj = with_phase("succeeded", phase.value, paused)
    expected = PHASE_HEALTH[phase]
    if paused and expected != "Degraded":
        expected = "Suspended"
    found = health(obj)
    assert found["status"] == expected
    if paused and expected == "Suspended":
        assert "spec.paused" in found["message"]


@pytest.mark.parametrize("phase", list(RolloutPhase))
@pytest.mark.parametrize("paused", [False, True])
def test_actions_offered_in_every_phase(phase: RolloutPhase, paused: bool) -> None:
    running = phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
    expected = {
        "promote": phase is RolloutPhase.PAUSED and not paused,
        "promote-full": running,
        "abort": running,
        "retry": phase in (RolloutPhase.FAILED, RolloutPhase.ABORTED),
        "pause": not paused,
        "resume": paused,
    }
    obj = with_phase("succeeded", phase.value, paused)
    assert enabled_actions(obj) == {name for name, on in expected.items() if on}


def test_a_degraded_condition_on_the_current_generation_is_degraded_whatever_the_phase() -> None:
    obj = with_phase("succeeded", "Progressing")
    obj["status"]["conditions"].append(
        {
            "type": "Degraded",
            "status": "True",
            "reason": "InvalidSpec",
            "message": "invalid spec: spec.analysis.interval must be greater than zero",
            "lastTransitionTime": "2026-11-26T10:00:00Z",
            "observedGeneration": obj["metadata"]["generation"],
        }
    )
    obj["status"]["conditions"] = [
        c for c in obj["status"]["conditions"] if c["type"] != "Degraded" or c["status"] == "True"
    ]
    assert health(obj) == {
        "status": "Degraded",
        "message": "invalid spec: spec.analysis.interval must be greater than zero",
    }
    # Reported for an older spec, it waits for the operator to look at the new one.
    obj["metadata"]["generation"] += 1
    assert health(obj)["status"] == "Progressing"


def test_a_spec_the_operator_has_not_seen_is_progressing_even_when_failed() -> None:
    obj = load_fixture("failed")
    obj["metadata"]["generation"] += 1
    found = health(obj)
    assert found["status"] == "Progressing"
    assert "generation 2" in found["message"]


def test_no_status_yet_is_progressing() -> None:
    obj = load_fixture("initialized")
    obj.pop("status")
    assert health(obj)["status"] == "Progressing"
    assert enabled_actions(obj) == {"pause"}


def test_unknown_phase_is_unknown() -> None:
    assert health(with_phase("succeeded", "Sideways"))["status"] == "Unknown"


def test_docs_show_the_argocd_cm_the_lua_files_make() -> None:
    rendered: str = runpy.run_path(str(ROOT / "hack" / "argocd-cm.py"))["render"]()
    data = yaml.safe_load(rendered)["data"]
    scripts = ROOT / "deploy" / "argocd" / "tidegate.io" / "ProgressiveRollout"
    assert (
        data["resource.customizations.health.tidegate.io_ProgressiveRollout"]
        == (scripts / "health.lua").read_text()
    )
    actions = yaml.safe_load(data["resource.customizations.actions.tidegate.io_ProgressiveRollout"])
    assert actions["discovery.lua"] == (scripts / "actions" / "discovery.lua").read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        name: (scripts / "actions" / name / "action.lua").read_text() for name in ACTIONS
    }
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert f"```yaml\n{rendered}```" in operations, "run hack/argocd-cm.py, paste into docs"
