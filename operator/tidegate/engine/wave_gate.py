"""Regions before this one (spec.waves.after): a release waits for them before it starts
here; and a region that rejects the release stable here reverts it here, when it is one after
this one (revertOnLaterFailure) or one before it (revertOnUpstreamRollback)."""

from __future__ import annotations

from collections.abc import Sequence

from tidegate.api import (
    RolloutPhase,
    WaveRegion,
    WavesStatus,
)
from tidegate.durations import parse_duration
from tidegate.engine import endings, steps, upkeep
from tidegate.engine.call import Call
from tidegate.engine.model import (
    SOON_SECONDS,
    WAVE_READY_EVENT,
    PointService,
    canary_runs,
)
from tidegate.plan import STABLE_ONLY
from tidegate.waves import FOLLOWED_REASON, judge_after, rejecting_region


def start_or_wait(call: Call, event_reason: str, note: str = "") -> None:
    """Start the rollout of the target, unless regions before this one must be waited for
    first: then no traffic moves (a rollout under way is ended) until they allow it."""
    waves = call.spec.waves
    if waves is None or not waves.after:
        steps.start_rollout(call, event_reason, note)
        return
    st = call.status
    if canary_runs(st):
        endings.end_rollout(call, RolloutPhase.WAITING_FOR_WAVE)
    st.phase = RolloutPhase.WAITING_FOR_WAVE
    wait_for(call, call.obs.target_revision)
    names = ", ".join(region.cluster for region in waves.after)
    call.event(
        "Normal",
        "WaitingForWave",
        f"Release {st.canary_release} (revision {st.canary_revision}) waits for {names}",
    )
    waiting_for_wave(call, event_reason, note)


def wait_for(call: Call, revision: str) -> None:
    st = call.status
    st.canary_revision = revision
    st.canary_release = call.obs.target_release
    st.current_step_index = None
    st.current_step_name = None
    st.metrics = []
    st.webhooks = []
    st.waves = WavesStatus(release=st.canary_release or "", waiting_since=call.now)


def waiting_for_wave(call: Call, event_reason: str = "RolloutStarted", note: str = "") -> None:
    st, target, waves = call.status, call.obs.target_revision, call.spec.waves
    upkeep.scale_down_canary(call)  # a rollout under way may have been ended for this wait
    if target == st.stable_revision:
        text = f"Cancelled release {st.canary_release}: the target went back to stable"
        st.phase = RolloutPhase.CANCELLED
        st.canary_revision = st.canary_release = None
        call.event("Normal", "Cancelled", text)
        call.say("Cancelled", text)
        call.wave = (False, "Cancelled", text)
        return
    if target != st.canary_revision:
        wait_for(call, target)
    if waves is None or not waves.after:
        steps.start_rollout(call, event_reason, note)
        return
    if call.spec.paused:
        call.say("PausedBySpec", "Waiting for the wave, paused: spec.paused is true")
        return
    assert st.waves is not None
    release = st.waves.release
    gate = judge_after(
        waves.after,
        call.obs.regions,
        release,
        st.waves.regions,
        call.obs.wave_measurements,
        call.now,
        call.interval,
    )
    st.waves.regions = list(gate.regions)
    rejected, waiting = gate.rejected, gate.waiting
    if rejected is not None:
        text = f"Region {rejected.cluster} rolled release {release} back: it is not rolled out here"
        fail_before_start(call, "RejectedUpstream", text)
        return
    if waiting is None:
        names = ", ".join(r.cluster for r in gate.regions)
        text = f"Regions before this one are ready for release {release}: {names}"
        call.wave = (True, "UpstreamReady", text)
        call.event("Normal", WAVE_READY_EVENT, text)
        steps.start_rollout(call, event_reason, note)
        return
    if waves.timeout is not None and st.waves.waiting_since is not None:
        deadline = st.waves.waiting_since + parse_duration(waves.timeout)
        if call.now >= deadline:
            text = (
                f"Release {release} waited longer than waves.timeout ({waves.timeout}): "
                f"{gate.describe()}"
            )
            fail_before_start(call, "WaveTimeout", text)
            return
        call.wake_at(deadline)
    text = f"Waiting for region {waiting.cluster} before release {release}: {gate.describe()}"
    call.say(waiting.reason, text)
    call.wave = (False, waiting.reason, text)
    if gate.wake_at is not None:
        call.wake_at(gate.wake_at)


def fail_before_start(call: Call, reason: str, text: str) -> None:
    """The waited-for release is never rolled out here: it took no traffic."""
    call.status.phase = RolloutPhase.FAILED
    call.event("Warning", reason, text)
    call.say(reason, text)
    call.wave = (False, reason, text)


def revert_on_rejection(call: Call) -> bool:
    """A region rejected the release that is stable here (rolled it back, or went back from
    it at once): with waves.revertOnLaterFailure a region under `before`, with
    waves.revertOnUpstreamRollback one under `after`. Go back to the release before it,
    without steps. True when it did."""
    waves = call.spec.waves
    if waves is None:
        return False
    if waves.revert_on_later_failure and _revert(
        call, waves.before, later=True, reason="RevertedOnLaterFailure"
    ):
        return True
    return bool(waves.revert_on_upstream_rollback) and _revert(
        call, waves.after, later=False, reason=FOLLOWED_REASON
    )


def _revert(call: Call, regions: Sequence[WaveRegion], *, later: bool, reason: str) -> bool:
    st = call.status
    if (
        st.phase is not RolloutPhase.SUCCEEDED
        or st.stable_release is None
        or st.previous_stable_revision is None
        or st.previous_stable_revision == st.stable_revision
    ):
        return False
    hit = rejecting_region(regions, call.obs.regions, st.stable_release, later=later)
    if hit is None:
        return False
    cluster, how = hit
    bad_revision, bad_release = st.stable_revision, st.stable_release
    assert bad_revision is not None
    previous = st.previous_stable_revision
    copy = call.obs.retiring.get(previous)  # (None: gone, or not looked at)
    call.stable_now(previous, st.previous_stable_release)
    # Rejected: not among the revisions spec.rollbackWindow takes back at once.
    st.stable_history = [r for r in st.stable_history or () if r != bad_revision] or None
    st.previous_stable_revision = st.previous_stable_release = None
    st.canary_revision, st.canary_release = bad_revision, bad_release
    st.phase = RolloutPhase.FAILED
    call.route(STABLE_ONLY)
    # Its copy, still running, kept at zero replicas (spec.rollbackWindow) or made again
    # from the kept template, is brought up; `<service>-stable` selects it at once when it
    # is ready, else once it is (`upkeep.point_stable`).
    call.heal("stable", copy, previous)
    if call.ready(copy, previous, call.obs.target_replicas):
        call.emit(PointService("stable", previous))
    else:
        # Looked at again soon: its copy may become ready with no change that wakes this.
        call.wakeups.append(SOON_SECONDS)
    text = (
        f"Release {bad_release} was rejected by region {cluster}, which {how}: reverted here "
        f"to release {st.stable_release} (revision {st.stable_revision}) without steps"
    )
    call.event("Warning", reason, text)
    call.say(reason, text)
    return True
