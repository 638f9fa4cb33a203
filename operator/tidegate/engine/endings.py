"""How a rollout ends: rolled back, aborted, cancelled, or promoted (a pointer flip: the
copy that was analysed becomes stable, and no pod is made)."""

from __future__ import annotations

from datetime import timedelta

from tidegate.api import (
    RolloutPhase,
    WebhookType,
)
from tidegate.engine.call import Call
from tidegate.engine.model import (
    ROLLED_BACK_PHASES,
    SOON_SECONDS,
    CallWebhooks,
    EnsureWorkload,
    PointService,
)
from tidegate.plan import STABLE_ONLY


def end_rollout(call: Call, phase: RolloutPhase) -> None:
    """Every way a rollout ends: all traffic on stable. The canary is scaled away by a
    later call, once the data plane is seen to have moved the traffic
    (`_scale_down_canary`)."""
    st = call.status
    call.route(STABLE_ONLY)
    if phase in ROLLED_BACK_PHASES and st.stable_revision is not None:
        # A promotion under way may have begun to give the stable copy the new template.
        call.heal("stable", call.obs.stable, st.stable_revision)
    st.canary_scale_down_at = None
    st.phase = phase
    st.step_started_at = None
    st.next_measurement_at = None
    st.waiting_since = None
    st.inconclusive_pause = False
    st.webhook_gate = None
    st.next_webhook_at = None
    st.next_rollback_poll_at = None
    if call.spec.webhooks_of(WebhookType.POST_ROLLOUT):
        call.emit(CallWebhooks(WebhookType.POST_ROLLOUT))


def roll_back(call: Call, reason: str, text: str) -> None:
    revision = call.status.canary_revision
    end_rollout(call, RolloutPhase.FAILED)
    call.event("Warning", "RolledBack", f"Rolled back revision {revision}: {text}")
    call.say(reason, text)


def cancel(call: Call) -> None:
    st = call.status
    message = (
        f"Cancelled the rollout of revision {st.canary_revision}: the target went back to "
        f"the stable revision {st.stable_revision}"
    )
    end_rollout(call, RolloutPhase.CANCELLED)
    call.event("Normal", "Cancelled", message)
    st.canary_revision = None
    call.say("Cancelled", message)


def begin_promotion(call: Call) -> None:
    st = call.status
    st.phase = RolloutPhase.PROMOTING
    st.step_started_at = None
    st.next_measurement_at = None
    st.webhook_gate = None
    st.next_webhook_at = None
    st.next_rollback_poll_at = None
    st.current_step_name = None  # past the last step: the phase says what happens
    st.waiting_since = call.now  # the progress deadline counts from here
    call.event("Normal", "Promoting", f"Promoting revision {st.canary_revision} to stable")
    promoting(call)


def promoting(call: Call) -> None:
    """The copy that was analysed becomes stable: brought to the stable copy's size, then
    `<service>-stable` flips to it. No other pod is made, the pods that served the last
    step go on serving, and the stable copy before it serves until the flip (it goes
    after the scale-down delay, `_retire`). Within the progress deadline, else rolled
    back; a pause stops the clock."""
    st, rev = call.status, call.status.canary_revision
    assert rev is not None
    if call.spec.paused:
        st.waiting_since = None
        call.say("PausedBySpec", f"Promotion of revision {rev} paused: spec.paused is true")
        return
    if st.waiting_since is None:
        st.waiting_since = call.now  # (resumed, or written by an operator without it)
    seconds = call.spec.progress_deadline_seconds
    deadline = st.waiting_since + timedelta(seconds=seconds)
    # The size stable serves at now (with an HPA: what it chose), at least.
    full = call.sized(call.obs.stable, call.obs.target_replicas)
    canary = call.obs.canary
    runs = canary is not None and canary.revision == rev
    if not runs or canary.replicas < full:  # type: ignore[union-attr]
        wanted = EnsureWorkload(role="canary", revision=rev, replicas=full)
        if wanted not in call.actions:
            call.emit(wanted)
    flip = False
    if not (runs and canary.ready and canary.replicas >= full):  # type: ignore[union-attr]
        waiting = f"the canary copy of revision {rev} to run {full} ready pods"
    elif not call.selects("stable", rev):
        flip = True
        waiting = f"{call.service('stable')} to select the copy of revision {rev}"
    else:
        waiting = ""
    if flip and call.now < deadline:
        call.emit(PointService("stable", rev))
    if waiting:
        if call.now >= deadline:
            roll_back(
                call,
                "ProgressDeadlineExceeded",
                f"revision {rev} was not promoted within {seconds}s: still waiting for {waiting}",
            )
            return
        call.say("Promoting", f"Waiting for {waiting}")
        call.wake_at(deadline)
        return
    st.waiting_since = None
    end_rollout(call, RolloutPhase.SUCCEEDED)
    call.event("Normal", "Promoted", f"Revision {rev} promoted to stable")
    if st.stable_revision != rev:
        st.previous_stable_revision = st.stable_revision
        st.previous_stable_release = st.stable_release
    call.stable_now(rev, st.canary_release)
    st.canary_revision = None
    st.canary_release = None
    st.current_step_name = None
    call.say("Promoted", f"Revision {rev} promoted to stable")
    if call.obs.target_revision != rev:
        call.wakeups.append(SOON_SECONDS)  # a newer revision waits: the next call starts it
