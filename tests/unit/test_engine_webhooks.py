"""Webhook gates and checks in the pure engine: which webhooks are due when, and what each
type's answer decides."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from test_engine import (
    MINUTE,
    T0,
    at,
    events,
    initialized,
    make_spec,
    observe,
    passing,
    ready,
    step,
    weights,
)

from tidegate.api import (
    PROMOTE_FULL_ANNOTATION,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    WebhookPhase,
    WebhookType,
)
from tidegate.engine import (
    CallWebhooks,
    ClearRequest,
    Decision,
    EmitEvent,
    EnsureWorkload,
    Observation,
    Selection,
    WebhookOutcome,
    due_webhooks,
    needs_measurement,
    webhook_body,
)

URL = "http://hooks.checks.svc:8080/"


def hook(name: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "url": URL + name, **extra}


def spec_with(*hooks: dict[str, Any], **options: Any) -> RolloutSpec:
    return make_spec(webhooks=list(hooks), **options)


def call(
    spec: RolloutSpec,
    status: RolloutStatus,
    obs: Observation,
    answers: dict[str, int | None] | None = None,
) -> tuple[Decision, list[str]]:
    """One reconcile as the reconciler runs it: the due webhooks are called (each answers as
    `answers` says, 200 unless named; None: no answer) and their outcomes observed. Also
    returns the names called."""
    answers = answers or {}
    due = due_webhooks(spec, status, obs.now)
    outcomes = tuple(
        WebhookOutcome(h.name, answers.get(h.name, 200), "timed out" if h.name in answers
                       and answers[h.name] is None else None)
        for h in due
    )  # fmt: skip
    return step(spec, status, replace(obs, webhooks=outcomes or None)), [h.name for h in due]


def started(spec: RolloutSpec, now: datetime = T0) -> Decision:
    """v2's rollout started and its canary ready: the first step's traffic is next."""
    begun = step(spec, initialized(spec), observe("v2", now=now, stable=ready("v1")))
    assert begun.status.phase is RolloutPhase.PROGRESSING
    return begun


def result(status: RolloutStatus, name: str) -> tuple[WebhookPhase, int | None]:
    found = next(r for r in status.webhooks if r.name == name)
    return found.phase, found.code


# --- preRollout -----------------------------------------------------------------------------


def test_pre_rollout_is_asked_before_the_canary_gets_a_pod_and_a_2xx_lets_it_through() -> None:
    spec = spec_with(hook("smoke", "preRollout"))
    begun = started(spec)
    assert not any(isinstance(a, EnsureWorkload) and a.role == "canary" for a in begun.actions)
    assert begun.status.webhook_gate is WebhookType.PRE_ROLLOUT
    assert begun.requeue_after is not None and begun.requeue_after < 1
    assert "preRollout" in begun.status.message
    assert [h.name for h in due_webhooks(spec, begun.status, T0)] == ["smoke"]

    no_canary = observe("v2", now=T0, stable=ready("v1"))
    through, called = call(spec, begun.status, no_canary)
    assert called == ["smoke"]
    assert EnsureWorkload(role="canary", revision="v2", replicas=3) in through.actions
    assert weights(through) == []  # not before the canary is ready
    assert through.status.pre_rollout_passed and through.status.webhook_gate is None
    assert result(through.status, "smoke") == (WebhookPhase.PASSED, 200)
    routed, called = call(spec, through.status, at(T0))
    assert called == [] and weights(routed) == [20]


@pytest.mark.parametrize("answer", [500, 403, 302, None])
def test_a_pre_rollout_refusal_or_no_answer_rolls_back_with_no_traffic(answer: int | None) -> None:
    spec = spec_with(hook("ok", "preRollout"), hook("smoke", "preRollout"))
    no_canary = observe("v2", now=T0, stable=ready("v1"))
    failed, called = call(spec, started(spec).status, no_canary, {"smoke": answer})
    assert called == ["ok", "smoke"]
    assert not any(isinstance(a, EnsureWorkload) and a.role == "canary" for a in failed.actions)
    assert failed.status.phase is RolloutPhase.FAILED
    assert weights(failed) == [0] and failed.status.canary_weight == 0
    assert 'webhook "smoke" (preRollout)' in failed.status.message
    reason = failed.status.condition("Degraded")
    assert reason is not None and reason.reason == "PreRolloutWebhookFailed"
    assert "RolledBack" in events(failed)


def test_pre_rollout_is_asked_once_per_rollout() -> None:
    spec = spec_with(hook("smoke", "preRollout"))
    held, _ = call(spec, started(spec).status, at(T0))
    through, _ = call(spec, held.status, at(T0))
    routed, _ = call(spec, through.status, at(T0))
    measured, called = call(spec, routed.status, at(T0 + MINUTE, measurements=passing()))
    assert called == [] and weights(measured) == [60]


def test_a_full_promotion_waits_for_pre_rollout() -> None:
    spec = spec_with(hook("smoke", "preRollout"))
    begun = started(spec)
    asked = at(T0, requests={PROMOTE_FULL_ANNOTATION: "alice"})
    refused, _ = call(spec, begun.status, asked)
    assert refused.status.phase is RolloutPhase.PROGRESSING
    assert ClearRequest(PROMOTE_FULL_ANNOTATION) in refused.actions
    assert "RequestRefused" in events(refused) and "PromotedFully" not in events(refused)


# --- confirmTrafficIncrease -----------------------------------------------------------------


def test_confirm_traffic_increase_holds_the_weight_without_a_failure_then_lets_it_go() -> None:
    spec = spec_with(hook("gate", "confirmTrafficIncrease"))
    held, _ = call(spec, started(spec).status, at(T0))
    refused, called = call(spec, held.status, at(T0), {"gate": 409})
    assert called == ["gate"] and weights(refused) == []
    st = refused.status
    assert st.phase is RolloutPhase.PROGRESSING and st.canary_weight == 0
    assert st.failed_checks == 0 and st.webhook_gate is WebhookType.CONFIRM_TRAFFIC_INCREASE
    assert 'webhook "gate" (confirmTrafficIncrease) answered 409' in st.message
    assert refused.requeue_after == 60
    assert "TrafficIncreaseHeld" in events(refused)
    # Not asked again before an interval has passed; asked again then.
    _, called = call(spec, st, at(T0 + MINUTE / 2))
    assert called == []
    again, called = call(spec, st, at(T0 + MINUTE), {"gate": 409})
    assert called == ["gate"] and again.status.failed_checks == 0
    assert "TrafficIncreaseHeld" not in events(again)  # said once
    through, _ = call(spec, again.status, at(T0 + 2 * MINUTE))
    assert weights(through) == [20] and through.status.webhook_gate is None
    assert "WebhooksConfirmed" in events(through)


def test_confirm_traffic_increase_is_asked_before_each_increase_only() -> None:
    spec = spec_with(
        hook("gate", "confirmTrafficIncrease"),
        steps=[{"setWeight": 20}, {"setHeaderRoute": {}}, {"setWeight": 60}],
    )
    held, _ = call(spec, started(spec).status, at(T0))
    routed, _ = call(spec, held.status, at(T0))
    running, _ = call(spec, routed.status, at(T0))
    # The header route step changes no weight: nothing to confirm; the next increase is.
    measured, called = call(spec, running.status, at(T0 + MINUTE, measurements=passing()))
    assert called == [] and weights(measured) == []
    assert measured.status.webhook_gate is WebhookType.CONFIRM_TRAFFIC_INCREASE
    assert measured.status.current_step_index == 2
    through, called = call(spec, measured.status, at(T0 + MINUTE))
    assert called == ["gate"] and weights(through) == [60]


def test_a_gate_webhook_with_no_answer_holds_too() -> None:
    spec = spec_with(hook("gate", "confirmTrafficIncrease"))
    held, _ = call(spec, started(spec).status, at(T0))
    refused, _ = call(spec, held.status, at(T0), {"gate": None})
    assert refused.status.phase is RolloutPhase.PROGRESSING and weights(refused) == []
    assert result(refused.status, "gate") == (WebhookPhase.ERROR, None)
    assert "did not answer: timed out" in refused.status.message


# --- confirmPromotion -----------------------------------------------------------------------


def last_step_passed(spec: RolloutSpec) -> tuple[Decision, datetime]:
    status = started(spec).status
    now = T0
    for _ in range(20):
        due = needs_measurement(spec, status, now)
        decision, _ = call(spec, status, at(now, measurements=passing() if due else None))
        status = decision.status
        if status.webhook_gate is WebhookType.CONFIRM_PROMOTION:
            return decision, now
        assert status.phase is RolloutPhase.PROGRESSING, status.message
        now += MINUTE
    raise AssertionError(status)


def test_confirm_promotion_holds_in_place_then_promotes() -> None:
    spec = spec_with(hook("release-window", "confirmPromotion"))
    held, now = last_step_passed(spec)
    assert held.status.canary_weight == 60 and held.status.current_step_index == 2
    refused, called = call(spec, held.status, at(now), {"release-window": 403})
    assert called == ["release-window"]
    st = refused.status
    assert st.phase is RolloutPhase.PROGRESSING and st.canary_weight == 60
    assert 'held by webhook "release-window" (confirmPromotion) answered 403' in st.message
    progressing = st.condition("Progressing")
    assert progressing is not None and progressing.reason == "PromotionHeld"
    assert "release-window" in progressing.message
    promoted, _ = call(spec, st, at(now + MINUTE))
    assert promoted.status.phase is RolloutPhase.SUCCEEDED  # (the canary runs at full size)
    assert "Promoting" in [a.reason for a in promoted.actions if isinstance(a, EmitEvent)]


def test_a_full_promotion_is_a_persons_override_of_the_confirm_gates() -> None:
    spec = spec_with(hook("release-window", "confirmPromotion"))
    held, now = last_step_passed(spec)
    refused, _ = call(spec, held.status, at(now), {"release-window": 403})
    asked = at(now, requests={PROMOTE_FULL_ANNOTATION: "alice"})
    promoted, _ = call(spec, refused.status, asked)
    assert promoted.status.phase is RolloutPhase.SUCCEEDED
    assert promoted.status.webhook_gate is None


# --- rollout --------------------------------------------------------------------------------


def test_rollout_webhooks_are_checks_beside_the_metrics() -> None:
    spec = spec_with(hook("load-test", "rollout"))
    running, _ = call(spec, started(spec).status, at(T0))
    running, _ = call(spec, running.status, at(T0))
    assert due_webhooks(spec, running.status, T0) == ()
    [due] = due_webhooks(spec, running.status, T0 + MINUTE)
    assert due.name == "load-test"
    failed, _ = call(
        spec, running.status, at(T0 + MINUTE, measurements=passing()), {"load-test": 500}
    )
    assert failed.status.failed_checks == 1 and failed.status.canary_weight == 20
    assert "CheckFailed" in events(failed)
    inconclusive, _ = call(
        spec, failed.status, at(T0 + 2 * MINUTE, measurements=passing()), {"load-test": None}
    )
    st = inconclusive.status
    assert st.failed_checks == 1 and st.inconclusive_checks == 1 and st.passed_checks == 0
    assert "CheckInconclusive" in events(inconclusive)
    passed, _ = call(spec, st, at(T0 + 3 * MINUTE, measurements=passing()))
    assert weights(passed) == [60]
    rolled_back, _ = call(
        spec, failed.status, at(T0 + 2 * MINUTE, measurements=passing()), {"load-test": 503}
    )
    assert rolled_back.status.phase is RolloutPhase.FAILED
    assert 'webhook "load-test" (rollout) answered 503' in rolled_back.status.message


def test_rollout_webhooks_alone_make_the_steps_analysed() -> None:
    spec = spec_with(hook("load-test", "rollout"), metrics=False)
    running, _ = call(spec, started(spec).status, at(T0))
    running, _ = call(spec, running.status, at(T0))
    assert needs_measurement(spec, running.status, T0 + MINUTE)
    failed, called = call(
        spec, running.status, at(T0 + MINUTE, measurements=()), {"load-test": 500}
    )
    assert called == ["load-test"] and failed.status.failed_checks == 1


def test_a_rollout_webhook_not_called_is_inconclusive() -> None:
    spec = spec_with(hook("load-test", "rollout"))
    running, _ = call(spec, started(spec).status, at(T0))
    running, _ = call(spec, running.status, at(T0))
    missing = step(spec, running.status, at(T0 + MINUTE, measurements=passing()))
    assert missing.status.inconclusive_checks == 1
    assert result(missing.status, "load-test")[0] is WebhookPhase.ERROR


# --- rollback -------------------------------------------------------------------------------


def test_a_rollback_webhook_is_polled_every_interval_and_a_2xx_rolls_back() -> None:
    spec = spec_with(hook("kill-switch", "rollback"))
    running, _ = call(spec, started(spec).status, at(T0))
    running, _ = call(spec, running.status, at(T0))
    assert running.status.next_rollback_poll_at == T0 + MINUTE
    no, called = call(
        spec, running.status, at(T0 + MINUTE, measurements=passing()), {"kill-switch": 404}
    )
    assert called == ["kill-switch"] and no.status.phase is RolloutPhase.PROGRESSING
    assert no.status.next_rollback_poll_at == T0 + 2 * MINUTE
    assert result(no.status, "kill-switch") == (WebhookPhase.FAILED, 404)
    yes, called = call(spec, no.status, at(T0 + 2 * MINUTE))
    assert called == ["kill-switch"]
    assert yes.status.phase is RolloutPhase.FAILED and weights(yes) == [0]
    condition = yes.status.condition("Degraded")
    assert condition is not None and condition.reason == "RolledBackByWebhook"
    assert 'webhook "kill-switch" (rollback) answered 200' in yes.status.message
    assert yes.status.next_rollback_poll_at is None


def test_a_rollback_webhook_is_polled_while_paused_for_promotion() -> None:
    spec = spec_with(hook("kill-switch", "rollback"), steps=[{"setWeight": 20}, {"pause": {}}])
    status = started(spec).status
    now = T0
    for _ in range(6):
        due = needs_measurement(spec, status, now)
        decision, _ = call(spec, status, at(now, measurements=passing() if due else None),
                           {"kill-switch": 404})  # fmt: skip
        status, now = decision.status, now + MINUTE
    assert status.phase is RolloutPhase.PAUSED
    assert decision.requeue_after is not None  # woken to poll, though nothing else is due
    yes, called = call(spec, status, at(now))
    assert called == ["kill-switch"] and yes.status.phase is RolloutPhase.FAILED


def test_no_webhook_is_due_outside_a_rollout() -> None:
    spec = spec_with(
        hook("a", "rollback"), hook("b", "rollout"), hook("c", "confirmPromotion"),
        hook("d", "preRollout"), hook("e", "postRollout"),
    )  # fmt: skip
    status = initialized(spec)
    assert due_webhooks(spec, status, T0 + 100 * MINUTE) == ()


# --- postRollout ----------------------------------------------------------------------------


def test_post_rollout_webhooks_are_called_once_a_rollout_ends() -> None:
    spec = spec_with(hook("chat", "postRollout"), hook("kill-switch", "rollback"))
    running, _ = call(spec, started(spec).status, at(T0))
    assert not any(isinstance(a, CallWebhooks) for a in running.actions)
    running, _ = call(spec, running.status, at(T0))
    ended, _ = call(spec, running.status, at(T0 + MINUTE, measurements=passing()))
    assert ended.status.phase is RolloutPhase.FAILED  # the kill switch said 200
    assert CallWebhooks(WebhookType.POST_ROLLOUT) in ended.actions
    assert [type(a).__name__ for a in ended.actions].count("CallWebhooks") == 1


def test_post_rollout_after_a_promotion() -> None:
    spec = spec_with(hook("chat", "postRollout"), steps=[{"setWeight": 50}])
    running, _ = call(spec, started(spec).status, at(T0))
    running, _ = call(spec, running.status, at(T0))
    # Held at the flip: `<service>-stable` not yet seen on the canary's copy.
    before_flip = Selection(stable="v1", canary="v2")
    promoting, _ = call(
        spec, running.status, at(T0 + MINUTE, measurements=passing(), selected=before_flip)
    )
    assert promoting.status.phase is RolloutPhase.PROMOTING
    assert CallWebhooks(WebhookType.POST_ROLLOUT) not in promoting.actions
    flipped = Selection(stable="v2", canary="v2")
    done = step(spec, promoting.status, at(T0 + MINUTE, selected=flipped))
    assert done.status.phase is RolloutPhase.SUCCEEDED
    assert CallWebhooks(WebhookType.POST_ROLLOUT) in done.actions


# --- the body -------------------------------------------------------------------------------


def test_the_body_names_the_rollout_its_revisions_step_weight_and_the_webhook() -> None:
    spec = spec_with(hook("gate", "confirmPromotion", metadata={"team": "shop"}))
    held, _ = last_step_passed(spec)
    body = webhook_body(spec.webhooks[0], "shop-ns", "shop", held.status)
    assert body == {
        "rollout": {"name": "shop", "namespace": "shop-ns"},
        "phase": "Progressing",
        "revisions": {"stable": "v1", "canary": "v2"},
        "step": {"index": 2, "name": "setWeight 60"},
        "weight": 60,
        "webhook": {"name": "gate", "type": "confirmPromotion"},
        "metadata": {"team": "shop"},
    }


# --- the API --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        (hook("a", "sometimes"), "Input should be"),
        ({"name": "a", "type": "rollout", "url": "ftp://x/"}, "String should match pattern"),
        (hook("a", "rollout", timeout="0s"), "timeout\n.*must be greater than zero"),
        (hook("a", "rollout", timeout="6m"), "longer than the maximum, 5m"),
        (hook("a", "rollout", metadata={"k": 1}), "Input should be a valid string"),
    ],
)
def test_bad_webhooks_are_rejected(webhook: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec_with(webhook)


def test_webhook_names_are_unique_and_timeout_defaults_to_ten_seconds() -> None:
    with pytest.raises(ValueError, match="used more than once"):
        spec_with(hook("a", "rollout"), hook("a", "rollback"))
    assert spec_with(hook("a", "rollout")).webhooks[0].timeout == "10s"
