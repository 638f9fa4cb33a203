"""Requests made with annotations (promote, promote --full, abort, retry, undo): each answered
once, acted on or refused with the reason, and cleared."""

from __future__ import annotations

from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    UNDO_ANNOTATION,
    RolloutPhase,
)
from tidegate.engine import endings, gates, undo, wave_gate
from tidegate.engine.call import Call
from tidegate.engine.model import (
    REQUEST_NAMES,
    ROLLED_BACK_PHASES,
    current_step,
)
from tidegate.plan import AwaitPromotion


def act_on_requests(call: Call) -> bool:
    """Abort, retry, promote-full and undo, when the rollout is where they make sense. True when
    one of them has decided this call. (Promote is answered by the pause it ends.)"""
    st, requests = call.status, call.obs.requests
    running = st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
    current = call.obs.target_revision == st.canary_revision
    if ABORT_ANNOTATION in requests and (running or st.phase is RolloutPhase.PROMOTING):
        # A promotion is aborted too: until it is done, stable is still the revision
        # before it, and the stable copy is given that back.
        abort(call, call.answer(ABORT_ANNOTATION))
        return True
    if ABORT_ANNOTATION in requests and st.phase is RolloutPhase.WAITING_FOR_WAVE:
        who = call.answer(ABORT_ANNOTATION)
        st.phase = RolloutPhase.ABORTED
        text = f"Aborted release {st.canary_release} before it started (asked by {who})"
        call.event("Warning", "Aborted", text)
        call.say("Aborted", text)
        call.wave = (False, "Aborted", text)
        return True
    if (
        RETRY_ANNOTATION in requests
        and st.phase in ROLLED_BACK_PHASES
        and current
        and not call.spec.paused
    ):
        who = call.answer(RETRY_ANNOTATION)
        wave_gate.start_or_wait(call, "RolloutRetried", f"; retry asked by {who}")
        return True
    if (
        PROMOTE_FULL_ANNOTATION in requests
        and running
        and current
        and not call.spec.paused
        and gates.pre_rollout_done(call)
    ):
        who = call.answer(PROMOTE_FULL_ANNOTATION)
        index = (st.current_step_index or 0) + 1
        call.event(
            "Normal",
            "PromotedFully",
            f"Skipping steps {index}-{len(call.plan.steps)} and their analysis of revision "
            f"{st.canary_revision}: full promotion asked by {who}",
        )
        endings.begin_promotion(call)
        return True
    return undo.ask_undo(call)


def refuse_unanswered_requests(call: Call) -> None:
    """Every request this call could not act on is refused, with the reason, and cleared;
    except a promote for a pause this call did not reach."""
    st = call.status
    phase = st.phase.value if st.phase is not None else "new"
    for annotation in sorted(call.obs.requests):
        if annotation in call.answered:
            continue
        if annotation == PROMOTE_ANNOTATION and pause_ahead(call):
            continue
        if annotation not in REQUEST_NAMES:
            continue
        if call.spec.paused and annotation != ABORT_ANNOTATION:
            why = "spec.paused is set; resume the rollout first"
        elif annotation == RETRY_ANNOTATION:
            why = (
                f"the rollout is {phase}; only a Failed or Aborted rollout can be retried, "
                "while the target still has the revision that failed"
            )
        elif annotation == PROMOTE_ANNOTATION:
            why = f"nothing is paused for promotion; the rollout is {phase}"
        elif annotation == UNDO_ANNOTATION:
            why = undo.undo_refusal(call) or f"the rollout is {phase}"
        elif (
            annotation == PROMOTE_FULL_ANNOTATION
            and st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
            and not gates.pre_rollout_done(call)
        ):
            why = "the preRollout webhooks have not all answered 2xx yet"
        elif st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
            why = "a newer revision of the target is about to be rolled out"
        else:
            why = f"no rollout is in progress; the rollout is {phase}"
        who = call.answer(annotation)
        call.event(
            "Warning",
            "RequestRefused",
            f"{REQUEST_NAMES[annotation]} asked by {who} was not done: {why}",
        )


def pause_ahead(call: Call) -> bool:
    """Whether the rollout is at a pause for promotion that this call did not reach."""
    st = call.status
    step = current_step(call.plan, st)
    return (
        not call.spec.paused
        and st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
        and step is not None
        and (isinstance(step.wait, AwaitPromotion) or st.inconclusive_pause)
    )


def abort(call: Call, who: str) -> None:
    st = call.status
    revision = st.canary_revision
    endings.end_rollout(call, RolloutPhase.ABORTED)
    text = (
        f"Aborted the rollout of revision {revision} (asked by {who}): all traffic is on "
        f"the stable revision {st.stable_revision}"
    )
    call.event("Warning", "Aborted", text)
    call.say("Aborted", text)
