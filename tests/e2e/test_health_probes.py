"""The operator's probe server (tidegate.health), over real HTTP from its own thread: it
reports a blocked event loop while the loop is blocked."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tidegate.health import HealthChecks, HealthServer, Heartbeat


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_blocked_event_loop_is_reported_by_the_server_thread(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The loop runs the heartbeat, then blocks; the probe, answered from its own thread,
    says so while it is blocked, and recovers once the loop runs again."""
    heartbeat = Heartbeat(period=0.01)
    checks = HealthChecks(heartbeat, started=lambda: True, stuck_after=0.2, lagging_after=0.1)
    server = HealthServer("127.0.0.1:0", checks).start()
    base = f"http://127.0.0.1:{server.port}"
    seen: dict[str, tuple[int, str]] = {}
    release = threading.Event()

    def prober() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and get(f"{base}/healthz")[0] != 503:
            pass
        seen["healthz"], seen["readyz"] = get(f"{base}/healthz"), get(f"{base}/readyz")
        release.set()

    async def main() -> None:
        beating = asyncio.create_task(heartbeat.run())
        await asyncio.sleep(0)  # one beat
        threading.Thread(target=prober, daemon=True).start()
        release.wait(15)  # blocks the loop, as a blocking call in a handler would
        await asyncio.sleep(0.05)  # the loop runs again: it beats
        seen["after"] = await asyncio.to_thread(get, f"{base}/healthz")
        beating.cancel()

    try:
        loop.run_until_complete(main())
    finally:
        server.stop()
    assert seen["healthz"][0] == 503 and seen["healthz"][1].startswith("event loop stuck")
    assert seen["readyz"][0] == 503 and seen["readyz"][1].startswith("event loop lagging")
    assert seen["after"] == (200, "ok")


def test_an_unknown_path_is_not_found() -> None:
    server = HealthServer("127.0.0.1:0", HealthChecks(Heartbeat(), started=lambda: False)).start()
    try:
        assert get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
        assert get(f"http://127.0.0.1:{server.port}/readyz") == (503, "starting")
        assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok")
    finally:
        server.stop()
