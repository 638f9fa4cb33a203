"""Waiting for something to become true: the one polling helper of the local environment,
its tests, the demo and the benchmark.

    status = wait_until(lambda: read_status(kubectl, ns, "shop"), "phase Initialized", 60,
                        until=lambda s: s.get("phase") == "Initialized")

`probe` is called every `interval` seconds until `until(value)` holds (by default: until the
value is truthy) and that value is returned. When the time is up, `WaitTimeout` says what was
awaited, the last value and the last retried error seen, and the tail of `log` if one is named:
a test that times out shows why. `wait_until_async` is the same for probes that must await.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# Errors that mean "not yet": a server not listening yet, a command that failed this time.
RETRIED: tuple[type[BaseException], ...] = (OSError, subprocess.SubprocessError)
INTERVAL = 0.1
LOG_TAIL_LINES = 30
SHOWN_CHARS = 2000


class WaitTimeout(TimeoutError):
    pass


@dataclass
class _Poll(Generic[T]):
    """One wait's deadline and what it has seen; both waiters below run on it."""

    what: str
    timeout: float
    log: Path | None
    until: Callable[[T], object]
    interval: float
    retry_on: tuple[type[BaseException], ...]
    seen: list[T] = field(default_factory=list)  # the last value, once there is one
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout

    def settled(self, outcome: T | Exception) -> bool:
        """Whether the wait is over with this outcome of the probe (its value or error).

        An error of `retry_on` means "not yet"; any other one ends the wait, raised.
        """
        if isinstance(outcome, Exception):
            if not isinstance(outcome, self.retry_on):
                raise outcome
            self.error = outcome
            return False
        self.seen[:] = [outcome]
        return bool(self.until(outcome))

    @property
    def value(self) -> T:
        return self.seen[0]

    def pause(self) -> float:
        """Seconds to sleep before the next try; WaitTimeout once the time is up."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(self.describe())
        return min(self.interval, left)

    def describe(self) -> str:
        text = f"gave up waiting for {self.what} after {self.timeout:.0f}s"
        if self.seen:
            text += f"; last seen: {_shorten(repr(self.seen[0]))}"
        if self.error is not None:
            text += f"; last error: {self.error!r}"
        if self.log is not None and self.log.exists():
            lines = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            text += f"\n--- {self.log} (last {len(lines)} lines)\n" + "\n".join(lines)
        return text


def _shorten(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " ..."


def _outcome(probe: Callable[[], T]) -> T | Exception:
    try:
        return probe()
    except Exception as error:
        return error


def wait_until(
    probe: Callable[[], T],
    what: str,
    timeout: float,
    log: Path | None = None,
    *,
    until: Callable[[T], object] = bool,
    interval: float = INTERVAL,
    retry_on: tuple[type[BaseException], ...] = RETRIED,
) -> T:
    """The first value of `probe()` for which `until` holds; WaitTimeout after `timeout` s."""
    poll = _Poll(what, timeout, log, until, interval, retry_on)
    while not poll.settled(_outcome(probe)):
        time.sleep(poll.pause())
    return poll.value


async def wait_until_async(
    probe: Callable[[], Awaitable[T]],
    what: str,
    timeout: float,
    *,
    until: Callable[[T], object] = bool,
    interval: float = INTERVAL,
) -> T:
    """`wait_until` for a coroutine probe, sleeping without blocking the event loop."""
    poll = _Poll(what, timeout, None, until, interval, RETRIED)
    while not poll.settled(await _outcome_async(probe)):
        await asyncio.sleep(poll.pause())
    return poll.value


async def _outcome_async(probe: Callable[[], Awaitable[T]]) -> T | Exception:
    try:
        return await probe()
    except Exception as error:
        return error
