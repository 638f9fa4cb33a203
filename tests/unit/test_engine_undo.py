"""Undo and spec.rollbackWindow in the engine: a revision that was stable before is taken
back at once (no steps, no analysis), `<service>-stable` flips to its copy once the copy is
ready, and the copy that served goes only after the usual wait."""

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as some
from test_engine import (
    MINUTE,
    REPLICAS,
    T0,
    events,
    make_spec,
    observe,
    passing,
    ready,
    rolling,
    starting,
    step,
    weights,
)

from tidegate.api import ABORT_ANNOTATION, UNDO_ANNOTATION, RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import (
    SOON_SECONDS,
    ClearRequest,
    Decision,
    EmitEvent,
    EnsureWorkload,
    ParkCopy,
    PointService,
    RemoveCopy,
    RestoreTarget,
    Selection,
    SetTraffic,
    WorkloadState,
)

ON_V1 = Selection(stable="v1", canary="v2")
ON_V2 = Selection(stable="v2", canary="v2")
DELAY = timedelta(seconds=30)  # the canary strategy's scaleDownDelaySeconds (its default)


def one_step(**extra: Any) -> RolloutSpec:
    return make_spec(steps=[{"setWeight": 50}], **extra)


def promoted(spec: RolloutSpec) -> RolloutStatus:
    """v2 promoted over v1 at T0 + 2 min (the v1 copy retiring, still running)."""
    status = rolling(spec)
    for now, selected, extra in (
        (T0 + MINUTE, ON_V1, {"measurements": passing()}),
        (T0 + 2 * MINUTE, ON_V2, {}),
    ):
        copies = {"stable": ready("v1"), "canary": ready("v2")}
        status = step(spec, status, observe("v2", now=now, selected=selected, **copies, **extra))
        status = status.status  # type: ignore[attr-defined]
    assert status.phase is RolloutPhase.SUCCEEDED
    assert (status.stable_revision, status.previous_stable_revision) == ("v2", "v1")
    assert status.stable_history == ["v1"]
    return status


def after(status: RolloutStatus, minutes: float, target: str = "v2", **extra: Any) -> Any:
    """What is seen `minutes` after T0 once `status`'s stable copy serves."""
    seen: dict[str, Any] = {
        "stable": ready(status.stable_revision or ""),
        "selected": Selection(stable=status.stable_revision, canary="v2"),
        "retiring": {r: ready(r) for r in status.retiring},
    }
    seen.update(extra)
    return observe(target, now=T0 + timedelta(minutes=minutes), **seen)


def undo_asked(**extra: Any) -> dict[str, Any]:
    return {"requests": {UNDO_ANNOTATION: "alice"}, **extra}


def refusal(decision: Decision) -> str:
    found = [
        a.message
        for a in decision.actions
        if isinstance(a, EmitEvent) and a.reason == "RequestRefused"
    ]
    assert len(found) == 1
    return found[0]


def test_undo_restores_the_target_and_takes_the_previous_revision_back_at_once() -> None:
    spec = one_step()
    done = promoted(spec)
    asked = step(spec, done, after(done, 2.1, **undo_asked()))
    # The target gets v1's template back before the request is cleared; v1's copy is
    # brought up at once; no traffic moves and no rollout starts.
    assert asked.actions[:3] == (
        RestoreTarget("v1"),
        EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS),
        ClearRequest(UNDO_ANNOTATION),
    )
    assert "UndoAsked" in events(asked)
    assert weights(asked) == []
    st = asked.status
    assert (st.phase, st.stable_revision, st.undo_revision) == (
        RolloutPhase.SUCCEEDED,
        "v2",
        "v1",
    )

    # The target is seen holding v1: v1 is stable at once, without steps or analysis.
    back = step(spec, st, after(st, 2.2, target="v1"))
    st = back.status
    assert "RolledBackFast" in events(back)
    assert (st.phase, st.stable_revision, st.previous_stable_revision) == (
        RolloutPhase.SUCCEEDED,
        "v1",
        "v2",
    )
    assert st.undo_revision is None and st.canary_revision is None
    assert st.current_step_index is None and st.canary_weight == 0
    assert st.stable_history == ["v2"]
    assert not any(isinstance(a, SetTraffic) for a in back.actions)
    assert "RolloutStarted" not in events(back)
    # v1's copy still runs (inside the scale-down delay): `<service>-stable` flips at once.
    assert PointService("stable", "v1") in back.actions

    # `<service>-stable` flips to v1's copy once it is ready, not before.
    unready = {"stable": starting("v1"), "selected": ON_V2, "retiring": {"v2": ready("v2")}}
    waiting = step(spec, st, after(st, 2.25, target="v1", **unready))
    assert not any(isinstance(a, PointService) for a in waiting.actions)
    flip = {"stable": ready("v1"), "selected": ON_V2, "retiring": {"v2": ready("v2")}}
    flipped = step(spec, st, after(st, 2.3, target="v1", **flip))
    assert PointService("stable", "v1") in flipped.actions
    # `<service>-canary`, left on v2 by the promotion, follows: nothing selects v2 then.
    assert PointService("canary", "v1") in flipped.actions
    # v2's copy, which served, is kept until the flip is seen, then for the delay.
    assert not any(isinstance(a, RemoveCopy | ParkCopy) for a in flipped.actions)
    assert flipped.status.retire_at is None
    seen = {"stable": ready("v1"), "selected": Selection("v1", "v1")}
    seen_flip = step(spec, st, after(st, 3, target="v1", **seen, retiring={"v2": ready("v2")}))
    assert seen_flip.status.retire_at == T0 + 3 * MINUTE + DELAY
    assert not any(isinstance(a, RemoveCopy) for a in seen_flip.actions)
    gone = step(
        spec,
        seen_flip.status,
        after(st, 4, target="v1", **seen, retiring={"v2": ready("v2")}),
    )
    assert gone.actions == (RemoveCopy("v2", keep_template=True),)


def test_undo_when_the_target_already_holds_the_previous_revision() -> None:
    spec = one_step()
    done = promoted(spec)
    back = step(spec, done, after(done, 2.1, target="v1", **undo_asked()))
    assert not any(isinstance(a, RestoreTarget) for a in back.actions)
    assert back.status.stable_revision == "v1"
    assert {"UndoAsked", "RolledBackFast"} <= set(events(back))


def test_undo_is_refused_mid_rollout_and_without_a_previous_revision() -> None:
    spec = one_step()
    running = step(
        spec,
        rolling(spec),
        observe("v2", stable=ready("v1"), canary=ready("v2"), **undo_asked()),
    )
    assert ClearRequest(UNDO_ANNOTATION) in running.actions
    assert "undo acts between rollouts" in refusal(running)
    assert running.status.phase is RolloutPhase.PROGRESSING

    first = step(spec, RolloutStatus(), observe("v1"))
    fresh = step(spec, first.status, observe("v1", stable=ready("v1"))).status
    refused = step(spec, fresh, observe("v1", stable=ready("v1"), **undo_asked()))
    assert "no previous stable revision" in refusal(refused)
    assert not any(isinstance(a, RestoreTarget | EnsureWorkload) for a in refused.actions)


def test_undo_is_refused_once_the_previous_copy_is_gone() -> None:
    spec = one_step()
    done = promoted(spec)
    refused = step(spec, done, after(done, 10, retiring={"v1": None}, **undo_asked()))
    assert "no copy of the previous stable revision v1" in refusal(refused)
    assert refused.status.stable_revision == "v2"
    assert not any(isinstance(a, RestoreTarget) for a in refused.actions)


def test_undo_is_refused_while_paused_by_spec() -> None:
    spec = one_step(paused=True)
    done = promoted(one_step())
    refused = step(spec, done, after(done, 2.1, **undo_asked()))
    assert "spec.paused" in refusal(refused)
    assert refused.status.undo_revision is None


def test_undo_after_an_abort_goes_back_past_the_stable_revision() -> None:
    spec = one_step()
    done = promoted(spec)
    v3 = step(spec, done, after(done, 3, target="v3")).status
    aborted = step(
        spec,
        v3,
        observe(
            "v3",
            now=T0 + 4 * MINUTE,
            stable=ready("v2"),
            canary=ready("v3"),
            requests={ABORT_ANNOTATION: "bob"},
        ),
    ).status
    assert aborted.phase is RolloutPhase.ABORTED
    asked = step(spec, aborted, after(aborted, 5, target="v3", **undo_asked()))
    assert RestoreTarget("v1") in asked.actions
    back = step(spec, asked.status, after(asked.status, 5.1, target="v1"))
    st = back.status
    assert (st.phase, st.stable_revision, st.canary_revision) == (
        RolloutPhase.SUCCEEDED,
        "v1",
        None,
    )


def test_a_revision_in_the_rollback_window_skips_the_steps() -> None:
    spec = one_step(rollbackWindow={"revisions": 1})
    done = promoted(spec)
    # v1's copy is kept at zero replicas, not removed, once the delay has passed.
    seen = {"retiring": {"v1": ready("v1")}}
    waiting = step(spec, done, after(done, 3, **seen))
    parked = step(spec, waiting.status, after(done, 4, **seen))
    assert parked.actions == (ParkCopy("v1"),)
    assert parked.status.retiring == ["v1"]
    idle = {"retiring": {"v1": WorkloadState("v1", 0, ready=True)}}
    kept = step(spec, parked.status, after(done, 5, **idle))
    assert kept.actions == () and kept.status.retiring == ["v1"]

    # The user sets the target back to v1: taken back at once, its copy brought up.
    back = step(spec, kept.status, after(done, 6, target="v1", **idle))
    assert "RolledBackFast" in events(back)
    assert "RolloutStarted" not in events(back)
    assert EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS) in back.actions
    # The flip waits for the copy; looked at again soon, whether or not it changes.
    assert not any(isinstance(a, PointService) for a in back.actions)
    assert back.requeue_after == SOON_SECONDS
    assert back.status.stable_revision == "v1"
    assert "rollbackWindow" in back.status.message

    # A revision outside the window is rolled out with its steps.
    newer = step(spec, back.status, after(back.status, 7, target="v9"))
    assert "RolloutStarted" in events(newer)
    assert newer.status.phase is RolloutPhase.PROGRESSING


def test_without_a_window_a_former_revision_is_rolled_out_with_its_steps() -> None:
    spec = one_step()
    done = promoted(spec)
    again = step(spec, done, after(done, 3, target="v1"))
    assert "RolloutStarted" in events(again)
    assert again.status.phase is RolloutPhase.PROGRESSING


@given(
    revisions=some.integers(min_value=1, max_value=5),
    promotions=some.lists(some.sampled_from("abcdefg"), min_size=1, max_size=12),
)
def test_the_window_holds_the_last_stable_revisions(revisions: int, promotions: list[str]) -> None:
    """Whatever the order of promotions, the window names the last N distinct revisions that
    were stable before the current one, and never the current one."""
    from tidegate.engine.call import Call
    from tidegate.engine.undo import window

    spec = one_step(rollbackWindow={"revisions": revisions})
    call = Call(spec, RolloutStatus(), observe("a"))
    for revision in promotions:
        call.stable_now(revision, None)
    earlier: list[str] = []
    for revision in promotions[:-1]:
        if revision in earlier:
            earlier.remove(revision)
        earlier.append(revision)
    earlier = [r for r in earlier if r != promotions[-1]]
    assert window(call) == earlier[-revisions:]


def test_an_undo_the_target_moved_away_from_is_over() -> None:
    spec = one_step()
    done = promoted(spec)
    asked = step(spec, done, after(done, 2.1, **undo_asked())).status
    assert asked.undo_revision == "v1"
    # Someone sets the target to v3 before the restored template is seen: a rollout of v3.
    moved = step(spec, asked, after(asked, 2.2, target="v3"))
    assert "RolloutStarted" in events(moved)
    assert moved.status.undo_revision is None
