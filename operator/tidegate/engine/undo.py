"""Going back to a revision that was stable before, at once: asked with undo (the previous
stable revision), or by giving the target the template of one of the last
spec.rollbackWindow.revisions stable revisions. No steps, no analysis: `<service>-stable`
flips to that revision's copy once the copy is ready, as a promotion flips it, and the copy
that served goes the usual way (`upkeep.retire`)."""

from __future__ import annotations

from tidegate.api import UNDO_ANNOTATION, RolloutPhase
from tidegate.engine.call import Call
from tidegate.engine.model import (
    SOON_SECONDS,
    STEADY_PHASES,
    EnsureWorkload,
    PointService,
    RestoreTarget,
)


def window(call: Call) -> list[str]:
    """The stable revisions before the current one that are taken back at once, the latest
    last (their copies are kept at zero replicas)."""
    spec_window = call.spec.rollback_window
    if spec_window is None:
        return []
    history = call.status.stable_history or []
    return [r for r in history[-spec_window.revisions :] if r != call.status.stable_revision]


def undo_refusal(call: Call) -> str | None:
    """Why undo cannot be done now (None: it can)."""
    st = call.status
    phase = st.phase.value if st.phase is not None else "new"
    previous = st.previous_stable_revision
    if st.phase not in STEADY_PHASES:
        return f"the rollout is {phase}; undo acts between rollouts (abort stops one)"
    if previous is None or previous == st.stable_revision:
        return "there is no previous stable revision to go back to"
    if call.obs.target_revision != previous and call.obs.retiring.get(previous) is None:
        return (
            f"no copy of the previous stable revision {previous} is left to take its template "
            "from (it goes after the scale-down delay; spec.rollbackWindow keeps it)"
        )
    return None


def ask_undo(call: Call) -> bool:
    """Answer an undo request that can be done: the target is given the previous stable
    revision's template back (`RestoreTarget`), its copy brought up, and the revision marked
    to be taken back at once when the target is seen holding it (`take_back`)."""
    st = call.status
    if UNDO_ANNOTATION not in call.obs.requests or call.spec.paused or undo_refusal(call):
        return False
    previous = st.previous_stable_revision
    assert previous is not None
    if call.obs.target_revision != previous:
        call.emit(RestoreTarget(previous))  # before the request is cleared
    replicas = call.sized(call.obs.retiring.get(previous), call.obs.target_replicas)
    call.emit(EnsureWorkload(role="stable", revision=previous, replicas=replicas))
    who = call.answer(UNDO_ANNOTATION)
    st.undo_revision = previous
    text = (
        f"Undo asked by {who}: going back to the previous stable revision {previous} "
        "without steps or analysis"
    )
    call.event("Normal", "UndoAsked", text)
    call.say("UndoAsked", text)
    if call.obs.target_revision == previous:
        take_back(call)
    return True


def takes_back(call: Call) -> bool:
    """Whether the revision the target holds is one to take back at once. An undo whose
    revision the target moved away from (to another than the stable one) is over."""
    target, st = call.obs.target_revision, call.status
    if st.undo_revision is not None and target not in (st.undo_revision, st.stable_revision):
        st.undo_revision = None
    return target != st.stable_revision and (target == st.undo_revision or target in window(call))


def take_back(call: Call) -> None:
    """Make the revision the target holds stable now: `<service>-stable` flips to its copy
    at once when that copy is ready, else the copy is brought up (at the size stable serves
    at) and the flip follows once it is ready (`upkeep.point_stable`); the route, all on
    stable, is not written."""
    st, target = call.status, call.obs.target_revision
    before, how = st.stable_revision, "undo" if target == st.undo_revision else "rollbackWindow"
    assert before is not None
    left = st.stable_release
    st.previous_stable_revision, st.previous_stable_release = before, left
    call.stable_now(target, call.obs.target_release)
    redo = call.obs.target_release == st.rejected_release  # back to what an undo left
    if left is not None and left != call.obs.target_release and not redo:
        # Published: the other regions take it as rolled back here. (A second undo, back to
        # the release the first one left, publishes nothing: see `core.forget_rejection`.)
        st.rejected_release = left
    workload = call.obs.retiring.get(target)
    replicas = call.sized(workload, call.obs.target_replicas)
    wanted = EnsureWorkload(role="stable", revision=target, replicas=replicas)
    if call.ready(workload, target, call.obs.target_replicas):
        call.emit(PointService("stable", target))  # its copy serves at once
    else:
        if wanted not in call.actions:
            call.emit(wanted)
        # Looked at again soon: its copy may have become ready before this call, and then
        # no change of it would wake the rollout.
        call.wakeups.append(SOON_SECONDS)
    st.replicas = call.obs.target_replicas
    st.undo_revision = None
    st.phase = RolloutPhase.SUCCEEDED
    st.canary_revision = st.canary_release = None
    st.current_step_index = None
    st.current_step_name = None
    st.canary_scale_down_at = None
    text = f"Revision {target} is stable again ({how}: no steps, no analysis); it was {before}"
    call.event("Normal", "RolledBackFast", text)
    call.say("RolledBackFast", text)


def point_canary_away(call: Call) -> None:
    """After a revision was taken back, `<service>-canary` may still select the copy that
    served before (a promotion leaves it on the promoted copy): once the stable copy is
    ready, it selects that one too (no traffic goes through it between rollouts), so the
    copy that served can go."""
    st, selected, stable = call.status, call.obs.selected, call.status.stable_revision
    if selected is None or stable is None or st.phase is not RolloutPhase.SUCCEEDED:
        return
    if st.canary_revision is not None or selected.canary not in st.retiring:
        return
    if call.ready(call.obs.stable, stable, call.obs.target_replicas):
        call.emit(PointService("canary", stable))
