"""The one polling helper: what it returns, what it retries, and what a timeout says."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from tidegate_devenv.waiting import WaitTimeout, wait_until, wait_until_async


def test_returns_the_first_value_that_passes() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter), "3", 5, until=lambda n: n >= 3, interval=0) == 3


def test_by_default_waits_for_a_truthy_value() -> None:
    values = iter([0, "", [], {"phase": "Ready"}])
    assert wait_until(lambda: next(values), "a status", 5, interval=0) == {"phase": "Ready"}


def test_errors_meaning_not_yet_are_retried() -> None:
    attempts = iter([ConnectionRefusedError("not listening"), OSError("reset"), "up"])

    def probe() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert wait_until(probe, "the server", 5, interval=0) == "up"


def test_any_other_error_ends_the_wait_at_once() -> None:
    calls = 0

    def probe() -> bool:
        nonlocal calls
        calls += 1
        raise KeyError("status")

    with pytest.raises(KeyError):
        wait_until(probe, "the status", 5, interval=0)
    assert calls == 1


def test_timeout_shows_what_was_awaited_the_last_value_error_and_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    attempts = itertools.count()

    def probe() -> dict[str, int]:
        if next(attempts) % 2:
            raise ConnectionResetError("dropped")
        return {"replicas": 1}

    began = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(probe, "3 replicas", 0.3, log, until=lambda d: d["replicas"] == 3)
    assert 0.3 <= time.monotonic() - began < 2
    message = str(caught.value)
    assert message.startswith("gave up waiting for 3 replicas after 0s")
    assert "last seen: {'replicas': 1}" in message
    assert "last error: ConnectionResetError('dropped')" in message
    assert "line 99" in message and "line 70" in message and "line 69" not in message
    assert isinstance(caught.value, TimeoutError)  # what callers such as the demo catch


def test_a_probe_is_tried_at_least_once_even_without_time() -> None:
    assert wait_until(lambda: "now", "it", 0) == "now"


def test_async_twin_awaits_the_probe_and_lets_the_loop_run() -> None:
    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())

        async def probe() -> int:
            return ticks

        try:
            # Only reachable if the wait sleeps without blocking the event loop.
            return await wait_until_async(probe, "5 ticks", 5, until=lambda n: n >= 5)
        finally:
            task.cancel()

    assert asyncio.run(scenario()) >= 5


def test_async_twin_times_out_the_same_way() -> None:
    async def probe() -> str:
        raise ConnectionRefusedError("nobody")

    with pytest.raises(WaitTimeout, match=r"gave up waiting for the operator.*nobody"):
        asyncio.run(wait_until_async(probe, "the operator", 0.2))
