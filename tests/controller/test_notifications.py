"""spec.notifications through the reconcile loop (a recording notifier), and the delivery
queue's retries, backoff and bounds in virtual time (an injected POST: this layer opens no
socket; tests/e2e/test_notifications.py delivers over HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fakes import NAME, NAMESPACE, Killed, World, example_spec
from test_reconciler import reconciler, settle

from tidegate import api, metrics
from tidegate.adapters.notifications import (
    Delivery,
    DeliveryError,
    DeliveryQueue,
    SecretProviders,
    WebhookNotifier,
)
from tidegate.notify import Message

HOOK = "https://hooks.example.com/hook"
CHAT = "https://chat.example.com/webhook"
PROVIDERS = {"hook": f"type: webhook\nurl: {HOOK}", "chat": f'{{"type": "slack", "url": "{CHAT}"}}'}


def notifying_world(
    notifications: list[dict[str, Any]], providers: dict[str, str] | None = None
) -> World:
    world = World(notification_providers=dict(PROVIDERS) if providers is None else providers)
    world.add_target()
    world.add_rollout(example_spec(notifications=notifications))
    return world


def told(world: World) -> list[tuple[str, str, str]]:
    """(provider, url, event) of every message queued."""
    return [(p, url, m.event.value) for p, url, m in world.notifications]


def lookups(world: World) -> int:
    return sum(1 for c in world.calls if c[0] == "notification_provider")


async def test_a_promoted_rollout_tells_each_provider_what_it_asked_for() -> None:
    world = notifying_world(
        [
            {"provider": "hook", "events": ["started", "step", "promoted"]},
            {"provider": "chat", "events": ["promoted", "rolledBack"]},
        ]
    )
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    assert world.notifications == []
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    assert told(world) == [
        ("hook", HOOK, "started"),
        ("hook", HOOK, "step"),
        ("hook", HOOK, "step"),
        ("hook", HOOK, "step"),
        ("hook", HOOK, "promoted"),
        ("chat", CHAT, "promoted"),
    ]
    started = world.notifications[0][2]
    assert (started.namespace, started.name, started.reason) == (NAMESPACE, NAME, "RolloutStarted")
    assert started.canary_revision == world.revision_of("1.1.0")
    assert [m.weight for p, _, m in world.notifications if m.event.value == "step"] == [10, 30, 60]
    # Nothing to tell: an idle pass looks no provider up (no request for the Secret).
    before = lookups(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert lookups(world) == before and len(world.notifications) == 6


async def test_a_failing_version_tells_of_its_failed_checks_and_the_rollback() -> None:
    world = notifying_world([{"provider": "hook", "events": ["checkFailed", "rolledBack"]}])
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.metric_value = 0.5  # over both thresholds
    world.set_version("1.2.0")
    await settle(world, {"Failed"}, rec)
    events = [e for _, _, e in told(world)]
    assert events[-1] == "rolledBack" and set(events[:-1]) == {"checkFailed"}
    rolled_back = world.notifications[-1][2]
    assert rolled_back.phase == "Failed" and "Rolled back revision" in rolled_back.message


async def test_a_missing_or_broken_provider_is_degraded_but_the_rollout_goes_on() -> None:
    providers = {"hook": f"type: webhook\nurl: {HOOK}", "chat": "type: pager\nurl: https://x"}
    world = notifying_world(
        [
            {"provider": "hook", "events": ["started"]},
            {"provider": "chat", "events": ["started"]},
            {"provider": "team-chat", "events": ["started"]},
        ],
        providers,
    )
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "InvalidNotificationProvider"
    assert "'chat'" in degraded["message"] and "'team-chat'" in degraded["message"]
    warnings = [e for e in world.events() if e[0] == "Warning"]
    assert [e[1] for e in warnings] == ["InvalidNotificationProvider"]
    # The rollout is not held up: it starts, and the provider that works is told.
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    assert told(world) == [("hook", HOOK, "started")]
    assert world.condition("Degraded")["status"] == "True"  # type: ignore[index]
    assert len([e for e in world.events() if e[0] == "Warning"]) == 1  # said once
    # Fixed (the spec no longer names them): checked again, and no longer Degraded.
    world.rollout["spec"]["notifications"] = [{"provider": "hook", "events": ["started"]}]  # type: ignore[index]
    world.rollout["metadata"]["generation"] = 2  # type: ignore[index]
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is None or degraded["status"] == "False"


async def test_a_rollback_keeps_its_own_degraded_reason_beside_a_broken_provider() -> None:
    world = notifying_world(
        [
            {"provider": "hook", "events": ["rolledBack"]},
            {"provider": "gone", "events": ["started"]},
        ]
    )
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    assert world.condition("Degraded")["reason"] == "NotificationProviderNotFound"  # type: ignore[index]
    world.metric_value = 0.5
    world.set_version("1.2.0")
    await settle(world, {"Failed"}, rec)
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "AnalysisFailed", degraded
    assert told(world) == [("hook", HOOK, "rolledBack")]
    warnings = [e[1] for e in world.events() if e[0] == "Warning"]
    assert warnings.count("NotificationProviderNotFound") == 1


async def test_a_new_process_checks_the_providers_once_and_then_only_when_needed() -> None:
    world = notifying_world([{"provider": "hook", "events": ["rolledBack"]}])
    await settle(world, {"Initialized"})
    assert lookups(world) >= 1
    rec = reconciler(world)  # another operator process
    await rec.reconcile(NAMESPACE, NAME)
    seen = lookups(world)
    await rec.reconcile(NAMESPACE, NAME)
    await rec.reconcile(NAMESPACE, NAME)
    assert lookups(world) == seen


async def test_a_missing_secret_is_degraded() -> None:
    world = notifying_world([{"provider": "hook", "events": ["started"]}], providers={})
    world.notification_providers = None
    await settle(world, {"Initialized"})
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "NotificationProviderNotFound"


async def test_a_provider_kept_to_other_namespaces_is_refused_and_sent_nothing() -> None:
    """The platform admin's `namespaces` on a provider: another tenant's rollout that names
    it is Degraded, said once, and nothing reaches that channel; a pattern that matches lets
    the message through."""
    providers = {
        "ours": f"type: webhook\nurl: {HOOK}\nnamespaces: ['team-*', {NAMESPACE!r}]",
        "theirs": f"type: slack\nurl: {CHAT}\nnamespaces: [payments]",
    }
    world = notifying_world(
        [
            {"provider": "ours", "events": ["started"]},
            {"provider": "theirs", "events": ["started"]},
        ],
        providers=providers,
    )
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "NotificationProviderNotAllowed"
    assert f"'theirs' may not be used by rollouts in namespace {NAMESPACE}" in degraded["message"]
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    assert told(world) == [("ours", HOOK, "started")]
    warnings = [e[1] for e in world.events() if e[0] == "Warning"]
    assert warnings.count("NotificationProviderNotAllowed") == 1


# --- the delivery queue ---------------------------------------------------------------------


def counted(provider: str, result: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "tidegate_notifications_total", {"provider": provider, "result": result}
    )
    return value or 0.0


class Endpoint:
    """What the injected POST does, try by try: None answers, a DeliveryError fails."""

    def __init__(self, *answers: DeliveryError | None) -> None:
        self.answers = list(answers)
        self.tries: list[tuple[float, str, dict[str, Any]]] = []
        self.release: asyncio.Event | None = None

    async def post(self, url: str, body: dict[str, Any]) -> None:
        self.tries.append((asyncio.get_running_loop().time(), url, body))
        if self.release is not None:
            await self.release.wait()
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


async def until(check: Callable[[], bool], timeout: float = 120) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@pytest.mark.looptime
async def test_a_failing_delivery_is_retried_with_backoff_then_sent() -> None:
    endpoint = Endpoint(DeliveryError("HTTP 503"), DeliveryError("ConnectionError"))
    queue = DeliveryQueue(endpoint.post, attempts=4, first_backoff=1.0)
    sent = counted("q-retry", "sent")
    start = asyncio.get_running_loop().time()
    queue.put(Delivery("q-retry", HOOK, {"n": 1}))
    await until(lambda: counted("q-retry", "sent") == sent + 1)
    assert [round(t - start, 3) for t, _, _ in endpoint.tries] == [0.0, 1.0, 3.0]
    assert queue.idle
    await queue.close()


@pytest.mark.looptime
async def test_a_delivery_that_never_goes_through_is_counted_failed() -> None:
    endpoint = Endpoint(
        *[DeliveryError("ConnectionRefused")] * 5, DeliveryError("HTTP 404", retry=False)
    )
    queue = DeliveryQueue(endpoint.post, attempts=3, first_backoff=2.0)
    failed = counted("q-fail", "failed")
    queue.put(Delivery("q-fail", HOOK, {"n": 1}))
    await until(lambda: counted("q-fail", "failed") == failed + 1)
    assert len(endpoint.tries) == 3
    # A refusal (a 4xx other than 429) is not tried again.
    endpoint.answers = [DeliveryError("HTTP 404", retry=False)]
    queue.put(Delivery("q-fail", HOOK, {"n": 2}))
    await until(lambda: counted("q-fail", "failed") == failed + 2)
    assert len(endpoint.tries) == 4
    await queue.close()


@pytest.mark.looptime
async def test_a_provider_that_is_down_holds_no_worker_from_the_others() -> None:
    async def post(url: str, body: dict[str, Any]) -> None:
        tries.append((asyncio.get_running_loop().time(), url))
        if url == "down":
            raise DeliveryError("ConnectionRefused")

    tries: list[tuple[float, str]] = []
    queue = DeliveryQueue(post, workers=1, attempts=3, first_backoff=5.0)
    start = asyncio.get_running_loop().time()
    queue.put(Delivery("q-down", "down", {}))
    queue.put(Delivery("q-up", "up", {}))
    await until(lambda: queue.idle and len(tries) == 4)
    assert [(round(t - start, 3), url) for t, url in tries] == [
        (0.0, "down"),
        (0.0, "up"),  # not after the down one's backoff
        (5.0, "down"),
        (15.0, "down"),
    ]
    await queue.close()


@pytest.mark.looptime
async def test_a_full_queue_drops_the_oldest_and_put_never_waits() -> None:
    endpoint = Endpoint()
    endpoint.release = asyncio.Event()  # the endpoint hangs until released
    queue = DeliveryQueue(endpoint.post, size=2, workers=1)
    dropped, sent = counted("q-full", "dropped"), counted("q-full", "sent")
    queue.put(Delivery("q-full", HOOK, {"n": 0}))
    await until(lambda: len(endpoint.tries) == 1)  # the worker waits on the endpoint
    for n in range(1, 5):
        queue.put(Delivery("q-full", HOOK, {"n": n}))  # returns at once all the same
    # 0 is being delivered; 1 and 2 were pushed out by 3 and 4.
    assert counted("q-full", "dropped") == dropped + 2
    endpoint.release.set()
    await until(lambda: counted("q-full", "sent") == sent + 3)
    assert [body["n"] for _, _, body in endpoint.tries] == [0, 3, 4]
    await queue.close()


@pytest.mark.looptime
async def test_a_bug_in_a_delivery_loses_that_message_only() -> None:
    endpoint = Endpoint(RuntimeError("bug"))  # type: ignore[arg-type]
    queue = DeliveryQueue(endpoint.post, workers=1)
    failed, sent = counted("q-bug", "failed"), counted("q-bug", "sent")
    queue.put(Delivery("q-bug", HOOK, {"n": 1}))
    queue.put(Delivery("q-bug", HOOK, {"n": 2}))
    await until(lambda: counted("q-bug", "sent") == sent + 1)
    assert counted("q-bug", "failed") == failed + 1
    await queue.close()


@pytest.mark.looptime
async def test_the_notifier_renders_for_the_provider_and_queues() -> None:
    endpoint = Endpoint()
    queue = DeliveryQueue(endpoint.post)

    async def read() -> dict[str, str]:
        return dict(PROVIDERS)

    notifier = WebhookNotifier(SecretProviders(read, "ops/tidegate-notifications"), queue)
    config = await notifier.provider("chat")
    assert config.type is api.ProviderType.SLACK
    message = Message(
        event=api.NotificationEvent.PROMOTED,
        reason="Promoted",
        namespace=NAMESPACE,
        name=NAME,
        phase="Succeeded",
        stable_revision="bbb",
        canary_revision=None,
        step_index=3,
        step_name=None,
        weight=0,
        message="Revision bbb promoted to stable",
        time=World().now,
    )
    notifier.send("chat", config, message)
    await until(lambda: len(endpoint.tries) == 1)
    _, url, body = endpoint.tries[0]
    assert url == CHAT and body["text"].endswith("Revision bbb promoted to stable")
    # A message that cannot even be queued is logged, never raised to the reconcile.
    broken = WebhookNotifier(notifier.providers, None)  # type: ignore[arg-type]
    broken.send("chat", config, message)
    await queue.close()


async def test_an_operator_killed_before_telling_has_the_next_one_tell_it_once() -> None:
    world = notifying_world([{"provider": "hook", "events": ["promoted"]}])
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    rec = reconciler(world)
    # Dies after writing the status that says Succeeded, before posting the Promoted Event.
    world.kill_when["post_event"] = lambda type_, reason, message: reason == "Promoted"
    with pytest.raises(Killed):
        await settle(world, {"__never__"}, rec)
    assert world.status["phase"] == "Succeeded"
    assert world.status["outbox"]["events"]  # decided, written, not told
    assert world.notifications == []
    del world.kill_when["post_event"]
    # A new process (the next leader) picks the rollout up and tells what was left.
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert [r for _, r, _ in world.events()].count("Promoted") == 1
    assert told(world) == [("hook", HOOK, "promoted")]
    assert "outbox" not in world.status
    # Told once: nothing more on the passes after.
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert [r for _, r, _ in world.events()].count("Promoted") == 1
    assert len(world.notifications) == 1


async def test_an_event_told_again_after_a_death_is_posted_once() -> None:
    world = notifying_world([{"provider": "hook", "events": ["promoted"]}])
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    rec = reconciler(world)
    # Dies after posting the Promoted Event, before the outbox is cleared.
    world.kill_when["patch_status"] = lambda patch: (
        patch.get("outbox", "") is None and any(r == "Promoted" for _, r, _ in world.events())
    )
    with pytest.raises(Killed):
        await settle(world, {"__never__"}, rec)
    assert [r for _, r, _ in world.events()].count("Promoted") == 1
    del world.kill_when["patch_status"]
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert [r for _, r, _ in world.events()].count("Promoted") == 1  # named: not posted again
    assert "outbox" not in world.status
