"""Webhooks through the reconcile loop, against a recording fake of the Webhooks port: who
is called when, with what body, and what each answer does to the rollout."""

from __future__ import annotations

from typing import Any

from fakes import NAME, NAMESPACE, World, example_spec
from test_reconciler import reconciler, settle

from tidegate.plan import Traffic

URL = "http://checks.shop-ns.svc:8080"


def webhook(name: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "url": f"{URL}/{name}", **extra}


async def rolling_world(*webhooks: dict[str, Any], **answers: int | None) -> World:
    """The canary example with these webhooks, initialised, then version 1.1.0 asked for."""
    world = World(webhook_answers=dict(answers))
    world.add_target()
    world.add_rollout(example_spec(webhooks=list(webhooks)))
    await settle(world, {"Initialized"})
    world.calls.clear()
    world.set_version("1.1.0")
    return world


def webhook_calls(world: World, name: str | None = None) -> list[dict[str, Any]]:
    """The bodies sent, in order (to the webhook `name` only, when given)."""
    return [c[2] for c in world.calls if c[0] == "call_webhook" and name in (None, c[1])]


def weights_set(world: World) -> list[int]:
    return [c[1].canary_weight for c in world.calls if c[0] == "set_traffic"]


async def test_confirm_promotion_holds_at_the_last_step_until_it_answers_2xx() -> None:
    hook = webhook("release-window", "confirmPromotion", metadata={"ticket": "CHG-1"})
    world = await rolling_world(hook, **{"release-window": 403})
    rec = reconciler(world)
    for _ in range(40):
        delay = await rec.reconcile(NAMESPACE, NAME)
        if webhook_calls(world):
            break
        world.wait(delay)
    [body] = webhook_calls(world)
    assert body == {
        "rollout": {"name": NAME, "namespace": NAMESPACE},
        "phase": "Progressing",
        "revisions": {"stable": world.revision_of("1.0.0"), "canary": world.revision_of("1.1.0")},
        "step": {"index": 3, "name": "setWeight 60"},
        "weight": 60,
        "webhook": {"name": "release-window", "type": "confirmPromotion"},
        "metadata": {"ticket": "CHG-1"},
    }
    status = world.status
    assert status["phase"] == "Progressing" and status["canaryWeight"] == 60
    assert 'webhook "release-window" (confirmPromotion) answered 403' in status["message"]
    assert status["webhooks"][0] | {"calledAt": None} == {
        "name": "release-window",
        "type": "confirmPromotion",
        "phase": "Failed",
        "code": 403,
        "message": 'webhook "release-window" (confirmPromotion) answered 403',
        "calledAt": None,
    }
    assert any(e[1] == "PromotionHeld" for e in world.events())
    # Asked again every interval (4s), still held.
    world.advance(4)
    await rec.reconcile(NAMESPACE, NAME)
    assert len(webhook_calls(world)) == 2 and world.status["phase"] == "Progressing"
    world.webhook_answers["release-window"] = 200
    world.advance(4)
    await settle(world, {"Succeeded"}, rec)
    assert len(webhook_calls(world)) == 3


async def test_a_failing_pre_rollout_webhook_fails_the_rollout_with_no_traffic_ever() -> None:
    world = await rolling_world(webhook("smoke", "preRollout"), smoke=500)
    await settle(world, {"Failed"})
    assert weights_set(world) and set(weights_set(world)) == {0}
    assert world.route == Traffic()
    assert [b["webhook"]["type"] for b in webhook_calls(world)] == ["preRollout"]
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "PreRolloutWebhookFailed"
    assert 'webhook "smoke" (preRollout) answered 500' in degraded["message"]
    assert any(e[1] == "RolledBack" and "smoke" in e[2] for e in world.events())


async def test_a_rollback_webhook_rolls_back_at_its_next_poll() -> None:
    world = await rolling_world(webhook("kill-switch", "rollback"), **{"kill-switch": 404})
    rec = reconciler(world)
    await settle(world, {"Progressing"}, rec)
    for _ in range(20):
        delay = await rec.reconcile(NAMESPACE, NAME)
        if world.status.get("canaryWeight") == 30:
            break
        world.wait(delay)
    assert len(webhook_calls(world, "kill-switch")) >= 1
    world.webhook_answers["kill-switch"] = 200
    polled_at = world.now
    await settle(world, {"Failed"}, rec)
    assert (world.now - polled_at).total_seconds() <= 4
    assert world.canary_weight == 0
    assert world.condition("Degraded")["reason"] == "RolledBackByWebhook"  # type: ignore[index]


async def test_confirm_traffic_increase_holds_the_weight_without_a_failed_check() -> None:
    world = await rolling_world(webhook("capacity", "confirmTrafficIncrease"), capacity=503)
    rec = reconciler(world)
    for _ in range(10):
        delay = await rec.reconcile(NAMESPACE, NAME)
        world.wait(delay)
    status = world.status
    assert status["phase"] == "Progressing" and world.canary_weight == 0
    assert status["failedChecks"] == 0 and status["webhookGate"] == "confirmTrafficIncrease"
    assert len(webhook_calls(world, "capacity")) >= 2
    world.webhook_answers["capacity"] = 200
    await settle(world, {"Succeeded"}, rec)
    assert weights_set(world)[-4:] == [10, 30, 60, 0]
    assert len({b["weight"] for b in webhook_calls(world, "capacity")}) == 3  # 0, 10 and 30


async def test_rollout_webhooks_are_measured_with_the_metrics() -> None:
    world = await rolling_world(webhook("load-test", "rollout"), **{"load-test": None})
    await settle(world, {"Failed"})
    assert "inconclusive 3 in a row" in world.status["message"]
    assert world.status["failedChecks"] == 0
    # Each call of the webhook came with a measurement of the metrics.
    assert len(webhook_calls(world)) == world.names().count("measure_all") == 3


async def test_rollout_webhooks_alone_need_no_prometheus() -> None:
    spec = example_spec(webhooks=[webhook("load-test", "rollout")])
    spec["analysis"] = {"interval": "4s"}
    world = World()
    world.add_target()
    world.add_rollout(spec)
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, reconciler(world, prometheus=None))
    assert "measure_all" not in world.names()
    assert len(webhook_calls(world)) == 3


async def test_post_rollout_webhooks_are_told_the_end_after_the_writes() -> None:
    world = await rolling_world(
        webhook("chat", "postRollout"), webhook("audit", "postRollout"), audit=None
    )
    rec = reconciler(world)
    await settle(world, {"Succeeded"}, rec)
    bodies = webhook_calls(world)
    assert [b["webhook"]["name"] for b in bodies] == ["chat", "audit"]
    assert {b["phase"] for b in bodies} == {"Succeeded"}
    assert bodies[0]["revisions"] == {"stable": world.revision_of("1.1.0"), "canary": None}
    events = world.events()
    assert ("Normal", "WebhookCalled", 'webhook "chat" (postRollout) answered 200') in events
    assert any(e[:2] == ("Warning", "WebhookFailed") and "audit" in e[2] for e in events)
    # Called after the route went back to stable.
    names = world.names()
    last_route = max(i for i, n in enumerate(names) if n == "set_traffic")
    assert names.index("call_webhook") > last_route
