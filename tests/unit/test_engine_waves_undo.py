"""Undo across waves in the engine: an undo (or the rollback window) publishes the release it
left as rejected (`status.rejectedRelease`); a region after it never starts that release, and
one that has it stable goes back with it (revertOnUpstreamRollback), without steps. A region
that goes back because another rejected its release uses the copy the window keeps, and the
window never takes the rejected revision back."""

from typing import Any

from test_engine import MINUTE, T0, events, make_spec, ready, step, weights
from test_engine_waves import R1, R2, at, initialized, no_traffic_moved, promoted, spec_with

from tidegate.api import UNDO_ANNOTATION, RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import (
    EnsureWorkload,
    PointService,
    RemoveCopy,
    RestoreTarget,
    Selection,
    WorkloadState,
)
from tidegate.waves import RegionRead, RemoteRollout, judge_after

PARKED_V1 = WorkloadState(revision="v1", replicas=0, ready=True)
LATER = {"cluster": "b", "kubeconfigSecretRef": {"name": "b-reader"}, "rollout": "app"}


def undone_in_a(stable: str = R1, rejected: str = R2) -> dict[str, RegionRead]:
    """Region a went back from `rejected` at once (an undo): Succeeded on `stable`."""
    return {"a": RegionRead(True, RemoteRollout("Succeeded", stable, None, T0, rejected))}


def with_window(status: RolloutStatus) -> RolloutStatus:
    """`status` with v1's copy kept at zero replicas by a rollback window of one."""
    return status.model_copy(update={"stable_history": ["v1"], "retiring": ["v1"]})


def test_an_undo_publishes_the_release_it_left_until_it_is_stable_here_again() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], metrics=False, rollbackWindow={"revisions": 1})
    status = with_window(promoted(spec))
    asked = step(
        spec,
        status,
        at(
            "v2",
            stable=ready("v2"),
            retiring={"v1": PARKED_V1},
            requests={UNDO_ANNOTATION: "alice"},
        ),
    )
    assert RestoreTarget("v1") in asked.actions
    assert asked.status.rejected_release is None  # not gone back yet
    back = step(spec, asked.status, at("v1", stable=ready("v2"), retiring={"v1": ready("v1")}))
    st = back.status
    assert "RolledBackFast" in events(back)
    assert (st.phase, st.stable_revision, st.stable_release) == (RolloutPhase.SUCCEEDED, "v1", R1)
    assert st.rejected_release == R2
    # It stays published while v1 serves...
    later = step(spec, st, at("v1", now=T0 + MINUTE, stable=ready("v1")))
    assert later.status.rejected_release == R2
    # ...and goes once v2 is stable here again (the window takes it back: a second undo).
    again = step(spec, st, at("v2", now=T0 + MINUTE, stable=ready("v1")))
    assert again.status.stable_release == R2 and again.status.rejected_release is None


def test_a_release_tried_again_is_no_longer_published_as_rejected() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], metrics=False)
    status = initialized(spec).model_copy(update={"rejected_release": R2})
    started = step(spec, status, at("v2"))
    assert started.status.phase is RolloutPhase.PROGRESSING
    assert started.status.rejected_release is None


def test_a_region_that_went_back_from_a_release_rejects_it() -> None:
    spec = spec_with()
    assert spec.waves is not None

    def reason(read: dict[str, RegionRead]) -> str:
        return judge_after(spec.waves.after, read, R2, [], {}, T0, MINUTE).regions[0].reason  # type: ignore[union-attr]

    assert reason(undone_in_a()) == "Rejected"
    assert reason(undone_in_a(rejected="template:other")) == "NotRolledOut"
    # Stable there again (a second undo, or promoted again): the rejection is over.
    assert reason(undone_in_a(stable=R2)) == "Soaking"


def test_a_release_undone_upstream_never_starts_here() -> None:
    spec = spec_with()
    failed = step(spec, initialized(spec), at("v2", regions=undone_in_a()))
    assert failed.status.phase is RolloutPhase.FAILED
    assert "RejectedUpstream" in events(failed) and no_traffic_moved(failed)
    assert "Region a" in failed.status.message


def follows(spec: RolloutSpec, regions: dict[str, RegionRead], **seen: Any) -> Any:
    return step(spec, promoted(spec), at("v2", stable=ready("v2"), regions=regions, **seen))


def test_a_region_with_the_release_stable_follows_an_undo_upstream() -> None:
    spec = spec_with(revertOnUpstreamRollback=True)
    reverted = follows(spec, undone_in_a())
    st = reverted.status
    assert st.phase is RolloutPhase.FAILED
    assert (st.stable_revision, st.stable_release) == ("v1", R1)
    # Published as rolled back here, so the regions after this one follow in turn.
    assert (st.canary_revision, st.canary_release) == ("v2", R2)
    assert EnsureWorkload(role="stable", revision="v1", replicas=3) in reverted.actions
    assert weights(reverted) == [0]  # no step: the route stays all on stable
    assert "RevertedWithUpstream" in events(reverted)
    degraded = st.condition("Degraded")
    assert degraded is not None and degraded.reason == "RevertedWithUpstream"
    assert "region a, which went back from the release" in st.message
    # A rollback of it there (Failed with it) is followed the same way.
    failed = {"a": RegionRead(True, RemoteRollout("Failed", R1, R2, None))}
    assert follows(spec, failed).status.phase is RolloutPhase.FAILED
    # Nothing to follow while a has it stable, or rejected another release.
    for fine in (undone_in_a(stable=R2), undone_in_a(rejected="template:other")):
        kept = follows(spec, fine)
        assert kept.status.phase is RolloutPhase.SUCCEEDED and kept.actions == ()
    # Without revertOnUpstreamRollback, an undo upstream leaves the stable release here.
    off = spec_with()
    assert follows(off, undone_in_a()).status.phase is RolloutPhase.SUCCEEDED


def test_an_undo_in_a_later_region_reverts_with_revert_on_later_failure() -> None:
    spec = make_spec(waves={"before": [LATER], "revertOnLaterFailure": True})
    undone = {"b": RegionRead(True, RemoteRollout("Succeeded", R1, None, T0, R2))}
    reverted = step(spec, promoted(spec), at("v2", stable=ready("v2"), regions=undone))
    assert reverted.status.phase is RolloutPhase.FAILED
    assert "RevertedOnLaterFailure" in events(reverted)


def test_a_revert_brings_the_copy_the_window_keeps_back_and_never_the_rejected_one() -> None:
    spec = make_spec(
        waves={"before": [LATER], "revertOnLaterFailure": True}, rollbackWindow={"revisions": 1}
    )
    rejected = {"b": RegionRead(True, RemoteRollout("Failed", R1, R2, None))}
    served = Selection(stable="v2", canary="v2")
    reverted = step(
        spec,
        with_window(promoted(spec)),
        at(
            "v2",
            stable=ready("v2"),
            retiring={"v1": PARKED_V1},
            selected=served,
            regions=rejected,
        ),
    )
    st = reverted.status
    assert st.phase is RolloutPhase.FAILED and st.stable_revision == "v1"
    # The kept copy is scaled up (not made again, not removed): no step, no analysis.
    assert EnsureWorkload(role="stable", revision="v1", replicas=3) in reverted.actions
    assert not any(isinstance(a, RemoveCopy) for a in reverted.actions)
    assert "v2" not in (st.stable_history or [])
    # Once v1's copy is ready, `<service>-stable` selects it; the target, still v2, is the
    # rejected release and the window does not take it back.
    status = st
    for minute in range(1, 4):
        seen = at("v2", now=T0 + minute * MINUTE, stable=ready("v1"), selected=served)
        decision = step(spec, status, seen)
        status = decision.status
        assert PointService("stable", "v1") in decision.actions
        assert "RolledBackFast" not in events(decision)
        assert (status.phase, status.stable_revision) == (RolloutPhase.FAILED, "v1")


def test_a_later_region_that_only_followed_back_does_not_revert_this_one() -> None:
    # a undid R2, b followed, then a went forward to R2 again (a second undo): b's rollback
    # of R2 was a's decision, not b's judgement, so it does not take R2 back out of a.
    spec = make_spec(waves={"before": [LATER], "revertOnLaterFailure": True})
    followed = {
        "b": RegionRead(True, RemoteRollout("Failed", R1, R2, None, followed=True)),
    }
    kept = step(spec, promoted(spec), at("v2", stable=ready("v2"), regions=followed))
    assert kept.status.phase is RolloutPhase.SUCCEEDED and kept.actions == ()
    # For the regions after b, its following back is a rollback all the same.
    after_b = spec_with(revertOnUpstreamRollback=True)
    as_a = {"a": followed["b"]}
    assert follows(after_b, as_a).status.phase is RolloutPhase.FAILED
    assert step(after_b, initialized(after_b), at("v2", regions=as_a)).status.phase is (
        RolloutPhase.FAILED
    )


def test_a_region_rolling_the_release_out_follows_once_it_is_promoted() -> None:
    region_a = {"cluster": "a", "kubeconfigSecretRef": {"name": "a-reader"}, "rollout": "app"}
    spec = make_spec(
        steps=[{"setWeight": 50}],
        metrics=False,
        waves={"after": [region_a], "revertOnUpstreamRollback": True},
    )
    ready_in_a = {"a": RegionRead(True, RemoteRollout("Succeeded", R2, None, T0 - MINUTE))}
    decision = step(spec, initialized(spec), at("v2", regions=ready_in_a))
    assert decision.status.phase is RolloutPhase.PROGRESSING
    # a undoes v2 while it rolls out here: the rollout goes on as its own steps say...
    for minute in range(1, 8):
        if decision.status.phase is RolloutPhase.SUCCEEDED:
            break
        stable = "v2" if decision.status.phase is RolloutPhase.PROMOTING else "v1"
        seen = at(
            "v2",
            now=T0 + minute * MINUTE,
            stable=ready(stable),
            canary=ready("v2"),
            regions=undone_in_a(),
        )
        decision = step(spec, decision.status, seen)
        assert "RevertedWithUpstream" not in events(decision)
    assert decision.status.phase is RolloutPhase.SUCCEEDED
    # ...and once promoted, the next pass follows a back.
    after = at("v2", now=T0 + 9 * MINUTE, stable=ready("v2"), regions=undone_in_a())
    followed = step(spec, decision.status, after)
    assert followed.status.phase is RolloutPhase.FAILED
    assert "RevertedWithUpstream" in events(followed)
