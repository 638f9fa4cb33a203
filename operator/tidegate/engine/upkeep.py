"""Adoption, the phases between rollouts, and what every call looks after whatever the
phase: the stable Service's copy, the user's Service, and scaling down or removing what no
longer serves, only once traffic away from it is seen applied and a delay has passed."""

from __future__ import annotations

from datetime import timedelta

from tidegate.api import (
    RolloutPhase,
)
from tidegate.engine import endings, undo, wave_gate
from tidegate.engine.call import Call
from tidegate.engine.model import (
    ROLLED_BACK_PHASES,
    IsolateService,
    ParkCopy,
    PointService,
    ReleaseTarget,
    RemoveCopy,
    ScaleWorkload,
)
from tidegate.plan import STABLE_ONLY


def target_gone(call: Call) -> None:
    """The target Deployment is gone: nothing new can be rolled out. A rollout under way
    is rolled back (its traffic all on stable); a promotion already under way finishes
    (the canary copy holds its template); otherwise stable keeps serving as it is."""
    st = call.status
    phase = st.phase
    assert st.stable_revision is not None  # (the reconciler sees to it)
    if phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
        endings.roll_back(
            call,
            "TargetNotFound",
            f"the target Deployment {call.spec.target_ref.name} was deleted mid-rollout: "
            f"all traffic is back on the stable revision {st.stable_revision}",
        )
    elif phase is RolloutPhase.PROMOTING:
        endings.promoting(call)
    elif phase is RolloutPhase.INITIALIZING:
        call.say("TargetNotFound", f"Waiting for the target {call.spec.target_ref.name}")
    else:
        call.heal("stable", call.obs.stable, st.stable_revision)
        scale_down_canary(call)


def initialize(call: Call) -> None:
    st = call.status
    st.phase = RolloutPhase.INITIALIZING
    st.stable_revision = call.obs.target_revision
    initializing(call)


def initializing(call: Call) -> None:
    st = call.status
    # Nothing serves canary traffic yet, so simply adopt whatever the template is now.
    st.stable_revision = call.obs.target_revision
    call.heal("stable", call.obs.stable, st.stable_revision)
    if not call.ready(call.obs.stable, st.stable_revision, call.obs.target_replicas):
        call.say("Initializing", f"Waiting for stable revision {st.stable_revision}")
        call.await_change()
    elif not call.selects("stable", st.stable_revision):
        # (`_point_stable` points it, now that the copy is ready.)
        call.say("Initializing", f"Waiting for {call.service('stable')} to select it")
        call.await_change()
    else:
        # The route moves to the stable copy only once it can serve: adopting a live
        # application must not drop its traffic.
        call.route(STABLE_ONLY)
        st.phase = RolloutPhase.INITIALIZED
        call.stable_now(st.stable_revision, call.obs.target_release)
        call.say("Initialized", f"Stable revision {st.stable_revision} is ready")
        call.event("Normal", "Initialized", st.message)


def steady(call: Call) -> None:
    st, target = call.status, call.obs.target_revision
    assert st.stable_revision is not None
    if call.spec.paused:
        return
    if wave_gate.revert_on_rejection(call):
        return
    failed_before = st.phase in ROLLED_BACK_PHASES and target == st.canary_revision
    # (A revision rolled back here, still the target's, is not taken back by the window.)
    if not failed_before and undo.takes_back(call):
        undo.take_back(call)
        return
    if target != st.stable_revision and not failed_before:
        wave_gate.start_or_wait(call, "RolloutStarted")
        return
    release = call.obs.target_release
    if st.stable_release is None and release is not None and target == st.stable_revision:
        # Written by an operator from before waves: published from now on.
        call.stable_now(target, release)
    call.heal("stable", call.obs.stable, st.stable_revision)
    scale_down_canary(call)


def scale_down_canary(call: Call) -> None:
    """Between rollouts the canary takes no traffic, so it runs no pods either: scaled to
    zero once the data plane is seen sending all traffic to stable and the scale-down
    delay has passed since (requests already on their way there finish). A route that
    drifts back to the canary, or a write that failed, starts the wait again."""
    st, canary = call.status, call.obs.canary
    if canary is None or canary.replicas == 0:
        st.canary_scale_down_at = None
        return
    selected = call.obs.selected
    if not call.holds(STABLE_ONLY) or (selected is not None and selected.stable == canary.revision):
        # (The stable Service selects it after a promotion was aborted past its flip, or
        # a revert to the release before: until it is pointed back.)
        st.canary_scale_down_at = None
        return  # woken when the route (or its status, or the Service) changes
    if st.canary_scale_down_at is None:
        rolled_back = st.phase in ROLLED_BACK_PHASES
        delay = call.spec.strategy.scale_down_delay(rolled_back)
        st.canary_scale_down_at = call.now + timedelta(seconds=delay)
    if call.now < st.canary_scale_down_at:
        call.wake_at(st.canary_scale_down_at)
        return
    call.emit(ScaleWorkload(role="canary", replicas=0))
    st.canary_scale_down_at = None


def isolate_service(call: Call) -> None:
    """Once the stable copy serves the route, the user's Service selects it alone: the
    canary, analysed through the route's weights, is never reached around them."""
    adopted = call.status.phase not in (None, RolloutPhase.INITIALIZING)
    ours = call.obs.traffic is not None and call.obs.traffic_applied
    selected = call.obs.selected
    stable = selected.stable if selected is not None else call.status.stable_revision
    if adopted and ours and stable is not None and not call.obs.service_isolated:
        call.emit(IsolateService(stable))


def point_stable(call: Call) -> None:
    """`<service>-stable` selects the stable revision's copy once that copy is ready (at
    adoption, on a revert to the release before, after a promotion aborted past its
    flip, or when someone changed the selector); a promotion flips it itself."""
    st, selected, revision = call.status, call.obs.selected, call.status.stable_revision
    if selected is None or revision is None or selected.stable == revision:
        return
    if st.phase is RolloutPhase.PROMOTING and selected.stable == st.canary_revision:
        return  # flipped by the promotion, which ends once it has seen that
    if call.ready(call.obs.stable, revision, call.stable_size()):
        call.emit(PointService("stable", revision))


def retire(call: Call) -> None:
    """Copies whose revision lost its role (the stable copy a promotion replaced, a
    canary given up) go, once no Service of tidegate's selects them, the user's Service
    selects the stable copy alone, the gateway has applied the routes as written, and
    the scale-down delay has passed since; at once when they run no pod. The copies of the
    revisions taken back at once (spec.rollbackWindow, an undo under way) are scaled to zero
    instead, and kept."""
    st, original = call.status, call.original
    roles = {st.stable_revision, st.canary_revision}
    for revision in (original.stable_revision, original.canary_revision):
        if revision is not None and revision not in roles and revision not in st.retiring:
            st.retiring.append(revision)
    observed = call.obs.retiring
    # Copies kept at zero replicas instead of removed: the revisions taken back at once.
    kept = {*undo.window(call), *([st.undo_revision] if st.undo_revision else [])}
    gone = {r for r in st.retiring if r in observed and observed[r] is None}
    left = [r for r in st.retiring if r not in roles and r not in gone]
    # (a status holds 8 at most, the oldest of the others dropped first: more than two at
    # once besides the kept ones is already rare)
    dropped = set([r for r in left if r not in kept][: max(0, len(left) - 8)])
    st.retiring = [r for r in left if r not in dropped]
    present = {r: w for r, w in observed.items() if r in st.retiring and w is not None}
    if not present:
        st.retire_at = None
        return
    selected = call.obs.selected
    in_use = {selected.stable, selected.canary} if selected is not None else set(roles)
    safe = (
        call.obs.traffic is not None
        and call.obs.traffic_applied
        and call.obs.service_isolated
        and not in_use & set(present)
    )
    if not safe:
        st.retire_at = None
        return  # woken when the route, its status or a Service changes
    idle = all(w.replicas == 0 for w in present.values())
    if st.retire_at is None and not idle:
        st.retire_at = call.now + timedelta(
            seconds=call.spec.strategy.scale_down_delay(rolled_back=False)
        )
    if st.retire_at is not None and call.now < st.retire_at:
        call.wake_at(st.retire_at)
        return
    for revision, workload in present.items():
        if revision in kept:
            if workload.replicas > 0:
                call.emit(ParkCopy(revision))
            continue
        keep = revision == st.previous_stable_revision
        call.emit(RemoveCopy(revision, keep_template=keep))
    st.retire_at = None


def scale_down_target(call: Call) -> None:
    """The user's Deployment runs no pods once tidegate's copies serve in its place: after
    adoption, or a resize by the user, once the route is seen applied on tidegate's
    Services, the user's Service selects the stable copy alone, and the scale-down delay
    has passed."""
    st = call.status
    adopted = st.phase not in (None, RolloutPhase.INITIALIZING)
    ours = call.obs.traffic is not None and call.obs.traffic_applied
    # With trafficRouting.podRatio the Service selects every copy during a step, and the
    # target's pods with them: taking those away drops no request (stable and canary pods
    # stay selected), and leaving them would serve what no step sized.
    isolated = call.obs.service_isolated or call.pod_ratio
    if not (call.obs.target_running and adopted and ours and isolated):
        st.target_scale_down_at = None
        return
    if st.target_scale_down_at is None:
        delay = call.spec.strategy.scale_down_delay(rolled_back=False)
        st.target_scale_down_at = call.now + timedelta(seconds=delay)
    if call.now < st.target_scale_down_at:
        call.wake_at(st.target_scale_down_at)
        return
    call.emit(ReleaseTarget())
    st.target_scale_down_at = None
