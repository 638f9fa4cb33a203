"""Webhooks against a real control plane and Prometheus: examples/webhooks applied as it is
(its URLs, placeholders for Services of a cluster, pointed at a local sink whose answers the
test switches), and the aiohttp adapter on its own against the same sink."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rollout_support import RouteWatch, Shop, get, set_version
from webhook_sink import WebhookSink

from tidegate import api
from tidegate.adapters.webhooks import HTTPWebhooks
from tidegate_devenv.cluster import free_port
from tidegate_devenv.routing import backend_weight
from tidegate_devenv.waiting import wait_until

WEBHOOKS_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhooks"
INTERVAL = 4.0  # the example's analysis.interval


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    server = WebhookSink()
    server.answers["kill-switch"] = 404  # no incident: the kill switch says no
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_example(start_shop: Callable[..., Shop], sink: WebhookSink) -> Shop:
    """examples/webhooks as it is, its webhooks then pointed at the sink."""
    shop = start_shop(example=WEBHOOKS_EXAMPLE, as_is=True)
    rollout = get(shop.kubectl, shop.namespace, "pro", "shop")
    patch = [
        {"op": "replace", "path": f"/spec/webhooks/{i}/url", "value": sink.url(w["name"])}
        for i, w in enumerate(rollout["spec"]["webhooks"])
    ]
    shop.kubectl.check(
        "patch", "-n", shop.namespace, "pro/shop", "--type=json", "-p", json.dumps(patch)
    )  # fmt: skip
    return shop


def webhook_result(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((w for w in status.get("webhooks", []) if w["name"] == name), {})


def test_confirm_promotion_holds_the_last_step_until_it_says_yes(
    start_shop: Callable[..., Shop], sink: WebhookSink
) -> None:
    sink.answers["change-window"] = 403
    shop = start_example(start_shop, sink)
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    held = shop.wait_status(
        lambda s: webhook_result(s, "change-window").get("code") == 403, "held by change-window"
    )
    assert held["phase"] == "Progressing" and held["webhookGate"] == "confirmPromotion"
    assert held["canaryWeight"] == 60 and shop.weight() == 60
    assert 'webhook "change-window" (confirmPromotion) answered 403' in held["message"]
    progressing = next(c for c in held["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "PromotionHeld" and "change-window" in progressing["message"]
    # Asked again an interval later, and still held.
    wait_until(lambda: len(sink.calls("change-window")) >= 2, "change-window asked again", 30)
    assert shop.phase() == "Progressing" and shop.weight() == 60
    body = sink.calls("change-window")[0].body
    assert body["rollout"] == {"name": "shop", "namespace": shop.namespace}
    assert body["webhook"] == {"name": "change-window", "type": "confirmPromotion"}
    assert body["revisions"]["canary"] == held["canaryRevision"] and body["weight"] == 60

    sink.answers["change-window"] = 200
    done = shop.wait_phase("Succeeded", 60)
    assert done["stableRevision"] == held["canaryRevision"]
    told = wait_until(lambda: sink.calls("chat"), "chat told the end", 30)
    assert told[0].body["phase"] == "Succeeded"
    assert told[0].body["metadata"] == {"channel": "#shop-releases"}


def test_a_failing_pre_rollout_webhook_fails_the_rollout_with_no_canary_traffic(
    start_shop: Callable[..., Shop], sink: WebhookSink
) -> None:
    sink.answers["smoke-test"] = 500
    shop = start_example(start_shop, sink)
    watch = RouteWatch(shop.kubectl, shop.namespace, "shop")
    try:
        wait_until(lambda: watch.seen, "the route watched", 30)
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        failed = shop.wait_phase("Failed", 90)
        assert 'webhook "smoke-test" (preRollout) answered 500' in failed["message"]
        degraded = next(c for c in failed["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "PreRolloutWebhookFailed"
        assert [c.body["revisions"]["canary"] for c in sink.calls("smoke-test")] == [
            failed["canaryRevision"]
        ]
    finally:
        watch.stop()
    assert watch.weights() == [0], watch.weights()
    assert sink.calls("capacity") == []  # nothing got as far as a weight increase


def test_a_rollback_webhook_rolls_back_within_one_interval(
    start_shop: Callable[..., Shop], sink: WebhookSink
) -> None:
    shop = start_example(start_shop, sink)
    watch = RouteWatch(shop.kubectl, shop.namespace, "shop")
    try:
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        shop.wait_status(lambda s: s.get("canaryWeight") == 30, "weight 30")
        assert sink.calls("kill-switch"), "polled while the rollout runs"
        switched = time.monotonic()
        sink.answers["kill-switch"] = 200
        failed = shop.wait_phase("Failed", 30)

        def back_on_stable() -> float | None:
            return next(
                (
                    at
                    for at, route in list(watch.seen)
                    if at > switched and (backend_weight(route, "shop-canary") or 0) == 0
                ),
                None,
            )

        back_at = wait_until(back_on_stable, "the route back on stable", 10)
    finally:
        watch.stop()
    asked = [r.at for r in sink.calls("kill-switch") if r.answer == 200]
    assert asked and asked[0] - switched <= INTERVAL + 0.5  # polled within an interval
    assert back_at - switched <= INTERVAL + 2  # and the route written right after
    assert 'webhook "kill-switch" (rollback) answered 200' in failed["message"]
    assert failed["canaryWeight"] == 0 and shop.weight() == 0


def test_confirm_traffic_increase_holds_the_weight_without_a_failed_check(
    start_shop: Callable[..., Shop], sink: WebhookSink
) -> None:
    sink.answers["capacity"] = 503
    shop = start_example(start_shop, sink)
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    wait_until(lambda: len(sink.calls("capacity")) >= 3, "capacity asked three times", 60)
    held = shop.status()
    assert held["phase"] == "Progressing" and held["webhookGate"] == "confirmTrafficIncrease"
    assert held["failedChecks"] == 0 and held["canaryWeight"] == 0 and shop.weight() == 0
    assert 'webhook "capacity" (confirmTrafficIncrease) answered 503' in held["message"]
    assert sink.calls("smoke-test"), "the preRollout webhook was asked first"
    sink.answers["capacity"] = 200
    done = shop.wait_phase("Succeeded", 90)
    assert done["failedChecks"] == 0
    assert {c.body["weight"] for c in sink.calls("capacity")} == {0, 10, 30}


# --- the adapter on its own -----------------------------------------------------------------


def call(sink_url: str, timeout: str = "2s") -> tuple[int | None, str | None]:
    hook = api.Webhook.model_validate(
        {"name": "h", "type": "rollout", "url": sink_url, "timeout": timeout}
    )

    async def run() -> tuple[int | None, str | None]:
        client = HTTPWebhooks()
        try:
            outcome = await client.call(hook, {"hello": "world"})
        finally:
            await client.close()
        return outcome.code, outcome.error

    return asyncio.run(run())


def test_the_adapter_posts_json_and_reports_every_answer(sink: WebhookSink) -> None:
    assert call(sink.url("fine")) == (200, None)
    assert sink.calls("fine")[0].body == {"hello": "world"}
    sink.answers["no"] = 403
    assert call(sink.url("no")) == (403, None)
    sink.answers["moved"] = 307
    assert call(sink.url("moved"))[0] == 307  # not followed
    assert sink.calls("elsewhere") == []
    sink.delays["slow"] = 3
    assert call(sink.url("slow"), timeout="500ms") == (None, "no answer within 0.5s")
    code, error = call(f"http://127.0.0.1:{free_port()}/nobody")
    assert code is None and error is not None and "Connect" in error
