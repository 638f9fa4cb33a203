"""One call of the engine: the stage the phase calls for, then what every call looks after,
then the conditions."""

from __future__ import annotations

from tidegate.api import (
    Condition,
    ConditionStatus,
    ConditionType,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
)
from tidegate.engine import answers, endings, gates, steps, undo, upkeep, wave_gate
from tidegate.engine.call import Call
from tidegate.engine.model import (
    PROGRESSING_PHASES,
    READY_PHASES,
    ROLLED_BACK_PHASES,
    Decision,
    Observation,
    SetTraffic,
    split_weight,
    status_traffic,
)


def reconcile(spec: RolloutSpec, status: RolloutStatus, obs: Observation) -> Decision:
    """The next status and the actions to take, in the order they must be taken, from the
    spec, the status as stored and what was observed (`needs()` says what that must hold)."""
    return run(Call(spec, status, obs))


def run(call: Call) -> Decision:
    phase = call.status.phase
    if gates.rollback_asked(call):
        pass  # a rollback webhook said yes: rolled back
    elif not call.obs.target_found:
        upkeep.target_gone(call)
    elif answers.act_on_requests(call):
        pass  # the request decided this call
    elif phase is None or call.status.stable_revision is None:
        upkeep.initialize(call)
    elif phase is RolloutPhase.INITIALIZING:
        upkeep.initializing(call)
    elif phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
        steps.progress(call)
    elif phase is RolloutPhase.PROMOTING:
        endings.promoting(call)
    elif phase is RolloutPhase.WAITING_FOR_WAVE:
        wave_gate.waiting_for_wave(call)
    else:
        upkeep.steady(call)
    answers.refuse_unanswered_requests(call)
    upkeep.point_stable(call)
    upkeep.isolate_service(call)
    upkeep.scale_down_target(call)
    upkeep.retire(call)
    undo.point_canary_away(call)
    restore_drift(call)
    # The share the pods give (the target may have been resized since the weight was set);
    # none with another router (one may have replaced podRatio).
    adopted = call.status.phase not in (None, RolloutPhase.INITIALIZING)
    call.status.effective_weight = (
        split_weight(*call.split(call.status.canary_weight)) if call.pod_ratio and adopted else None
    )
    poll = call.status.next_rollback_poll_at
    if poll is not None and call.status.phase in (
        RolloutPhase.PROGRESSING,
        RolloutPhase.PAUSED,
    ):
        call.wake_at(poll)
    forget_rejection(call)
    call.status.observed_generation = call.obs.generation
    update_conditions(call)
    requeue = min(call.wakeups) if call.wakeups else None
    return Decision(status=call.status, actions=tuple(call.actions), requeue_after=requeue)


def forget_rejection(call: Call) -> None:
    """A release this region went back from at once stops being published as rejected once
    it is tried here again (a rollout of it) or is stable here again."""
    st = call.status
    if st.rejected_release is not None and st.rejected_release in (
        st.stable_release,
        st.canary_release,
    ):
        st.rejected_release = None


def restore_drift(call: Call) -> None:
    """Routes that someone else changed (a GitOps sync, a hand edit), or that a failed write
    left behind, are put back to the status's traffic, before any other write: every
    decision of this call was made on the traffic the status names."""
    adopted = call.status.phase not in (None, RolloutPhase.INITIALIZING)
    if not adopted or any(isinstance(a, SetTraffic) for a in call.actions):
        return
    wanted = status_traffic(call.status)
    if call.obs.traffic != wanted:
        call.actions.insert(0, SetTraffic(wanted, restore=True))


def update_conditions(call: Call) -> None:
    st = call.status
    phase = st.phase
    assert phase is not None
    wanted: list[tuple[str, bool, str]] = [
        (ConditionType.READY, phase in READY_PHASES, call.reason or phase.value),
        (
            ConditionType.PROGRESSING,
            phase in PROGRESSING_PHASES,
            call.reason if phase in PROGRESSING_PHASES and call.reason else phase.value,
        ),
        (
            ConditionType.DEGRADED,
            phase in ROLLED_BACK_PHASES,
            call.reason if phase in ROLLED_BACK_PHASES and call.reason else "AsExpected",
        ),
    ]
    ours = {type_ for type_, _, _ in wanted}
    conditions = [condition(call, type_, ok, reason) for type_, ok, reason in wanted]
    if call.wave is not None:
        ours.add(ConditionType.WAVE)
        conditions.append(wave_condition(call, *call.wave))
    conditions += [c for c in st.conditions if c.type not in ours]
    st.conditions = conditions


def wave_condition(call: Call, ok: bool, reason: str, message: str) -> Condition:
    status: ConditionStatus = "True" if ok else "False"
    existing = call.status.condition(ConditionType.WAVE)
    if existing is not None and (existing.status, existing.reason, existing.message) == (
        status,
        reason,
        message,
    ):
        return existing.model_copy(update={"observed_generation": call.obs.generation})
    changed = existing is None or existing.status != status
    return Condition(
        type=ConditionType.WAVE,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=call.now if changed else existing.last_transition_time,  # type: ignore[union-attr]
        observed_generation=call.obs.generation,
    )


def condition(call: Call, type_: str, ok: bool, reason: str) -> Condition:
    status: ConditionStatus = "True" if ok else "False"
    existing = call.status.condition(type_)
    if existing is not None and existing.status == status:
        if call.reason is None:
            # Nothing happened: keep the condition exactly as it was.
            return existing.model_copy(update={"observed_generation": call.obs.generation})
        transition = existing.last_transition_time
    else:
        transition = call.now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=call.status.message,
        last_transition_time=transition,
        observed_generation=call.obs.generation,
    )
