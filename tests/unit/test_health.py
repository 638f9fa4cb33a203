"""The probes: liveness fails on a stuck event loop; readiness drops while the process
cannot act."""

from __future__ import annotations

import threading

from tidegate.health import HealthChecks, Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_fails_once_the_loop_has_been_silent_for_stuck_after() -> None:
    clock = Clock()
    checks = HealthChecks(Heartbeat(clock), started=lambda: True, stuck_after=30)
    clock.now += 29.9
    assert checks.live().ok
    clock.now += 0.1
    verdict = checks.live()
    assert not verdict.ok and verdict.why == "event loop stuck: no heartbeat for 30s"
    checks.heartbeat.beat()
    assert checks.live().ok


def test_readiness_waits_for_the_watches_then_drops_on_a_lagging_loop_or_an_unread_lease() -> None:
    clock = Clock()
    started = threading.Event()
    unread = [0.0]
    checks = HealthChecks(
        Heartbeat(clock),
        started=started.is_set,
        lease_unread_for=lambda: unread[0],
        lease_duration=15,
        lagging_after=10,
    )
    assert checks.ready().why == "starting"
    started.set()
    assert checks.ready().ok
    clock.now += 10
    assert checks.ready().why == "event loop lagging: no heartbeat for 10s"
    assert checks.live().ok  # lagging is not yet stuck
    checks.heartbeat.beat()
    unread[0] = 15.0
    assert checks.ready().ok  # a lease's worth of failed reads is still a blip
    unread[0] = 16.0
    assert checks.ready().why == "the Lease unreadable for 16s"
