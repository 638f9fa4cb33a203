"""The webhooks that gate a rollout (docs/api.md, Webhooks): the rollback webhooks polled
while it runs, and the preRollout, confirmTrafficIncrease and confirmPromotion gates."""

from __future__ import annotations

from datetime import datetime

from tidegate.api import (
    RolloutPhase,
    Webhook,
    WebhookPhase,
    WebhookResult,
    WebhookType,
)
from tidegate.engine import endings
from tidegate.engine.call import Call
from tidegate.engine.model import (
    WebhookOutcome,
)
from tidegate.plan import STABLE_ONLY, PlanStep

_GATE_HELD_REASONS = {
    WebhookType.CONFIRM_TRAFFIC_INCREASE: "TrafficIncreaseHeld",
    WebhookType.CONFIRM_PROMOTION: "PromotionHeld",
}


def judge_webhook(webhook: Webhook, outcome: WebhookOutcome | None, now: datetime) -> WebhookResult:
    subject = f'webhook "{webhook.name}" ({webhook.type.value})'
    code = None if outcome is None else outcome.code
    if outcome is None:
        phase, text = WebhookPhase.ERROR, f"{subject} was not called"
    elif code is None:
        phase, text = (
            WebhookPhase.ERROR,
            f"{subject} did not answer: {(outcome.error or '')[:2000]}",
        )
    elif 200 <= code < 300:
        phase, text = WebhookPhase.PASSED, f"{subject} answered {code}"
    else:
        # The status code only: what the endpoint said is not repeated on the rollout (a
        # URL is a tenant's to choose, and may be a service that is not theirs).
        phase, text = WebhookPhase.FAILED, f"{subject} answered {code}"
    return WebhookResult(
        name=webhook.name, type=webhook.type, phase=phase, code=code, message=text, called_at=now
    )


def _outcomes(call: Call, hooks: list[Webhook]) -> list[WebhookOutcome] | None:
    """The outcome of each of `hooks` in the observation; None unless all were called."""
    by_name = {o.webhook: o for o in call.obs.webhooks or ()}
    found = [by_name.get(h.name) for h in hooks]
    return None if any(o is None for o in found) else [o for o in found if o is not None]


def record(call: Call, results: list[WebhookResult]) -> list[WebhookResult]:
    """Keep each webhook's latest result in the status (in the order of spec.webhooks)."""
    if results:
        latest = {r.name: r for r in call.status.webhooks}
        latest.update((r.name, r) for r in results)
        order = [w.name for w in call.spec.webhooks]
        call.status.webhooks = sorted(
            latest.values(),
            key=lambda r: order.index(r.name) if r.name in order else len(order),
        )
    return results


def judged(call: Call, hooks: list[Webhook]) -> list[WebhookResult] | None:
    outcomes = _outcomes(call, hooks)
    if outcomes is None:
        return None
    return record(
        call, [judge_webhook(h, o, call.now) for h, o in zip(hooks, outcomes, strict=True)]
    )


def rollback_asked(call: Call) -> bool:
    """Polls the rollback webhooks while the rollout runs: True when one answered 2xx and
    the rollout was rolled back."""
    st = call.status
    hooks = call.spec.webhooks_of(WebhookType.ROLLBACK)
    if not hooks or st.phase not in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
        return False
    due = st.next_rollback_poll_at
    if due is None:  # webhooks added while the rollout runs
        st.next_rollback_poll_at = call.now + call.interval
        return False
    if call.now < due:
        return False
    results = judged(call, hooks)
    if results is None:
        return False
    st.next_rollback_poll_at = call.now + call.interval
    yes = [r for r in results if r.phase is WebhookPhase.PASSED]
    if not yes:
        return False
    endings.roll_back(call, "RolledBackByWebhook", f"{yes[0].message}: a rollback was asked")
    return True


def pre_rollout_done(call: Call) -> bool:
    return call.status.pre_rollout_passed or not call.spec.webhooks_of(WebhookType.PRE_ROLLOUT)


def may_route(call: Call, label: str, step: PlanStep) -> bool:
    """Whether the webhooks let the routes take the step's traffic now."""
    st = call.status
    if step.traffic != STABLE_ONLY and not gate(call, WebhookType.PRE_ROLLOUT, label):
        return False
    increase = step.traffic.canary_weight > st.canary_weight
    return not increase or gate(call, WebhookType.CONFIRM_TRAFFIC_INCREASE, label)


def gate(call: Call, type_: WebhookType, label: str) -> bool:
    """Whether the rollout may go past a point the webhooks of `type_` gate: they all
    answered 2xx in this call. Otherwise it waits there: asks them next call, or again
    an interval after a refusal; a preRollout refusal rolls back."""
    st = call.status
    hooks = call.spec.webhooks_of(type_)
    if not hooks or (type_ is WebhookType.PRE_ROLLOUT and st.pre_rollout_passed):
        return True
    asked = (
        not call.started and call.original.webhook_gate is type_ and type_ not in call.gates_passed
    )
    results = judged(call, hooks) if asked else None
    if results is None:
        if st.webhook_gate is not type_:
            st.webhook_gate, st.next_webhook_at = type_, call.now
        names = ", ".join(f'"{h.name}"' for h in hooks)
        call.say("WaitingForWebhooks", f"{label}: asking the {type_.value} webhooks ({names})")
        call.wake_at(st.next_webhook_at or call.now)
        return False
    refusing = [r for r in results if r.phase is not WebhookPhase.PASSED]
    before = {r.name: r.phase for r in call.original.webhooks}
    if not refusing:
        st.webhook_gate, st.next_webhook_at = None, None
        call.gates_passed.add(type_)
        if type_ is WebhookType.PRE_ROLLOUT:
            st.pre_rollout_passed = True
        if any(before.get(h.name, WebhookPhase.PASSED) is not WebhookPhase.PASSED for h in hooks):
            call.event(
                "Normal", "WebhooksConfirmed", f"{label}: {type_.value} webhooks answered 2xx"
            )
        return True
    first = refusing[0]
    if type_ is WebhookType.PRE_ROLLOUT:
        endings.roll_back(call, "PreRolloutWebhookFailed", first.message)
        return False
    st.next_webhook_at = call.now + call.interval
    reason = _GATE_HELD_REASONS[type_]
    text = f"{label}: held by {first.message}; asking again every {call.spec.analysis.interval}"
    if before.get(first.name) is not first.phase:
        call.event("Warning", reason, text)
    call.say(reason, text)
    call.wake_at(st.next_webhook_at)
    return False
