"""spec.notifications against a real operator: examples/notifications applied, its
providers' Secret pointing at a local HTTP sink (a small aiohttp server in this process), and
the delivery queue over real HTTP.

The sink records every JSON body it receives by path (one path per provider). A sink that is
down (connection refused) must delay nothing: the rollback completes as it does without one,
and the loss is counted in the operator's /metrics.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from aiohttp import web
from rollout_support import Shop, events, set_version

from tidegate import failpoints, metrics
from tidegate.adapters.notifications import Delivery, DeliveryQueue
from tidegate.notify import SCHEMA_VERSION
from tidegate_devenv.cluster import KubectlRunner, free_port
from tidegate_devenv.paths import NOTIFICATIONS_EXAMPLE
from tidegate_devenv.waiting import wait_until

PROVIDERS = ("team-chat", "ops-teams", "audit-log")


class Sink:
    """An aiohttp server on 127.0.0.1 in a thread of its own: POST /<path> records the JSON
    body, after answering 503 `failures_left[path]` times."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.failures_left: dict[str, int] = {}
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the sink did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def _run(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            path = request.match_info["path"]
            if self.failures_left.get(path, 0) > 0:
                self.failures_left[path] -= 1
                return web.Response(status=503)
            self.received.setdefault(path, []).append(await request.json())
            return web.Response(text="ok")

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/{path}", receive)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        asyncio.set_event_loop(self.loop)
        self._runner = self.loop.run_until_complete(start())
        self._started.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return list(self.received.get(path, []))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    try:
        yield server
    finally:
        server.stop()


def apply_secret(kubectl: KubectlRunner, namespace: str, url: Callable[[str], str]) -> str:
    """examples/notifications/secret.yaml in `namespace`, each provider's URL replaced by
    `url(provider)`; its NAMESPACE/NAME for --notifications-secret."""
    secret = yaml.safe_load((NOTIFICATIONS_EXAMPLE / "secret.yaml").read_text())
    secret["metadata"]["namespace"] = namespace
    for provider, text in secret["stringData"].items():
        config = yaml.safe_load(text)
        config["url"] = url(provider)
        secret["stringData"][provider] = yaml.safe_dump(config)
    kubectl.check("apply", "-f", "-", stdin=yaml.safe_dump(secret))
    return f"{namespace}/{secret['metadata']['name']}"


def start_notifying_shop(
    start_shop: Callable[..., Shop],
    kubectl: KubectlRunner,
    namespace: str,
    url: Callable[[str], str],
) -> Shop:
    secret = apply_secret(kubectl, namespace, url)  # before the operator looks it up
    return start_shop(example=NOTIFICATIONS_EXAMPLE, notifications_secret=secret)


def events_of(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["event"] for b in bodies]


def test_a_sink_gets_one_message_per_configured_event(
    start_shop: Callable[..., Shop], kubectl: KubectlRunner, namespace: str, sink: Sink
) -> None:
    shop = start_notifying_shop(start_shop, kubectl, namespace, sink.url)
    conditions = {c["type"]: c for c in shop.status()["conditions"]}
    assert conditions.get("Degraded", {}).get("status") != "True", conditions
    set_version(kubectl, namespace, "1.1.0")
    shop.wait_phase("Succeeded", 120)
    wait_until(
        lambda: (
            "promoted" in events_of(sink.bodies("audit-log"))
            and any(": promoted" in b["text"] for b in sink.bodies("team-chat"))
        ),
        "the promotion told to audit-log and team-chat",
        30,
    )
    audit = sink.bodies("audit-log")
    assert events_of(audit) == ["started", "step", "step", "step", "promoted"], audit
    assert [b["weight"] for b in audit if b["event"] == "step"] == [10, 30, 60]
    promoted = audit[-1]
    assert promoted["schemaVersion"] == SCHEMA_VERSION
    assert promoted["rollout"] == {"namespace": namespace, "name": "shop"}
    assert promoted["phase"] == "Succeeded" and promoted["reason"] == "Promoted"
    assert promoted["stableRevision"] == shop.status()["stableRevision"]
    assert set(promoted) == {
        "schemaVersion", "event", "reason", "rollout", "phase", "stableRevision",
        "canaryRevision", "step", "weight", "message", "time",
    }  # fmt: skip
    slack = sink.bodies("team-chat")
    assert len(slack) == 2 and "rollout started" in slack[0]["text"], slack
    assert sink.bodies("ops-teams") == []  # nothing went wrong

    set_version(kubectl, namespace, "1.2.0", error_rate=0.5)
    shop.wait_phase("Failed", 120)
    wait_until(
        lambda: (
            events_of(sink.bodies("audit-log"))[-1:] == ["rolledBack"]
            and len(sink.bodies("team-chat")) == 4
            and len(sink.bodies("ops-teams")) >= 2
        ),
        "the rollback told to every provider",
        30,
    )
    failing = events_of(sink.bodies("audit-log"))[5:]
    assert failing[:2] == ["started", "step"] and failing[-1] == "rolledBack", failing
    assert "checkFailed" in failing
    assert failing.count("rolledBack") == 1
    assert "rolled back" in sink.bodies("team-chat")[-1]["text"]
    teams = sink.bodies("ops-teams")
    assert teams[-1]["@type"] == "MessageCard" and "rolled back" in teams[-1]["title"]
    # Counted once the sink's answer is back (a moment after the sink has the body).
    delivered = len(sink.bodies("audit-log"))
    wait_until(
        lambda: shop.operator.notifications("audit-log", "sent") == delivered,
        f"{delivered} messages to audit-log counted sent",
        10,
    )
    assert shop.operator.notifications("audit-log", "failed") == 0


def test_an_operator_that_died_before_telling_a_promotion_has_it_told_once_by_the_next(
    start_shop: Callable[..., Shop], kubectl: KubectlRunner, namespace: str, sink: Sink
) -> None:
    shop = start_notifying_shop(start_shop, kubectl, namespace, sink.url)
    set_version(kubectl, namespace, "1.1.0")
    shop.wait_status(lambda s: s.get("canaryWeight") == 60, "the canary at its last step", 120)
    # An operator that dies right after writing the status that promotes, before anything
    # that status decided is done or told (no Event, no notification, no route write).
    shop.restart_operator(env={failpoints.ENV: "after-status:Promoted"})
    code = wait_until(
        shop.operator.process.poll, "the operator to die at the failpoint", 120,
        until=lambda code: code is not None,
    )  # fmt: skip
    assert code == failpoints.EXIT_CODE
    status = shop.status()
    assert status["phase"] == "Succeeded"
    assert [e["reason"] for e in status["outbox"]["events"]] == ["Promoted"]
    assert "Promoted" not in [e["reason"] for e in events(kubectl, namespace)]
    assert "promoted" not in events_of(sink.bodies("audit-log"))

    shop.restart_operator()
    wait_until(
        lambda: (
            "Promoted" in [e["reason"] for e in events(kubectl, namespace)]
            and "promoted" in events_of(sink.bodies("audit-log"))
            and any(": promoted" in b["text"] for b in sink.bodies("team-chat"))
            and "outbox" not in shop.status()
        ),
        "the promotion told by the next operator, and the outbox cleared",
        90,
    )
    wait_until(shop.weight, "the route on stable alone", 60, until=lambda weight: weight == 0)
    # Told once each: the Event, and the message to each provider that asks for it.
    assert [e["reason"] for e in events(kubectl, namespace)].count("Promoted") == 1
    assert events_of(sink.bodies("audit-log")).count("promoted") == 1
    assert sum(": promoted" in b["text"] for b in sink.bodies("team-chat")) == 1


def test_a_sink_that_is_down_delays_no_rollback(
    start_shop: Callable[..., Shop], kubectl: KubectlRunner, namespace: str
) -> None:
    closed = free_port()  # nothing listens there: every try is refused
    shop = start_notifying_shop(
        start_shop, kubectl, namespace, lambda provider: f"http://127.0.0.1:{closed}/{provider}"
    )
    set_version(kubectl, namespace, "1.2.0", error_rate=0.5)
    # As test_rollouts' rollback without notifications: the same deadline.
    status = shop.wait_phase("Failed", 120)
    assert status["canaryWeight"] == 0

    def failed(provider: str) -> float:
        return shop.operator.notifications(provider, "failed")

    # Every try refused: each message is counted failed once its retries are spent (team-chat:
    # started, rolledBack; audit-log: started, a step, a failed check at least, rolledBack).
    wait_until(
        lambda: failed("team-chat") >= 2 and failed("audit-log") >= 4,
        "the lost messages counted failed",
        60,
    )
    assert shop.operator.notifications("team-chat", "sent") == 0


async def test_the_queue_delivers_over_http_retrying_a_503(sink: Sink) -> None:
    queue = DeliveryQueue(first_backoff=0.05)
    sent = metrics.REGISTRY.get_sample_value(
        "tidegate_notifications_total", {"provider": "flaky", "result": "sent"}
    )
    sink.failures_left["flaky"] = 2
    queue.put(Delivery("flaky", sink.url("flaky"), {"n": 1}))
    try:
        async with asyncio.timeout(30):
            while not sink.bodies("flaky"):
                await asyncio.sleep(0.02)
    finally:
        await queue.close()
    assert sink.bodies("flaky") == [{"n": 1}]
    assert sink.failures_left["flaky"] == 0
    after = metrics.REGISTRY.get_sample_value(
        "tidegate_notifications_total", {"provider": "flaky", "result": "sent"}
    )
    assert (after or 0) == (sent or 0) + 1
