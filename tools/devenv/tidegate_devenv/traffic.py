"""Traffic as the load generator saw it: a background load whose responses can be read while
it runs, and what share of them each version served over a window of time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tidegate_devenv.loadgen import LoadResult, generate
from tidegate_devenv.waiting import wait_until, wait_until_async

# (time.monotonic() when the response arrived, version that served it or None, status code)
Sample = tuple[float, str | None, int]


def is_error(code: int) -> bool:
    """A 5xx, or no HTTP response at all (loadgen records those as code 0)."""
    return code >= 500 or code == 0


@dataclass(frozen=True)
class Split:
    total: int = 0
    by_version: dict[str | None, int] = field(default_factory=dict)
    errors: int = 0

    def share(self, version: str | None) -> float:
        return self.by_version.get(version, 0) / self.total if self.total else 0.0

    def describe(self) -> str:
        if not self.total:
            return "no responses"
        shares = " ".join(
            f"{v or 'none'} {100 * n / self.total:.0f}%"
            for v, n in sorted(self.by_version.items(), key=lambda kv: str(kv[0]))
        )
        return f"{shares} | errors {self.errors}/{self.total}"


def split(samples: Sequence[Sample], start: float, end: float) -> Split:
    """Responses that arrived in [start, end), by version, and how many were errors."""
    versions: Counter[str | None] = Counter()
    errors = 0
    for at, version, code in samples:
        if start <= at < end:
            versions[version] += 1
            errors += is_error(code)
    return Split(sum(versions.values()), dict(versions), errors)


def first_error_at(samples: Sequence[Sample], after: float = float("-inf")) -> float | None:
    """When the first 5xx response at or after `after` arrived."""
    return next((at for at, _, code in samples if at >= after and code >= 500), None)


def settled_at(
    samples: Sequence[Sample],
    version: str,
    after: float,
    *,
    threshold: float = 0.01,
    window: float = 1.0,
) -> float | None:
    """The earliest response time t >= `after` from which on every `window`-second window
    (one starting at each later response) has less than `threshold` of its responses
    served by `version`; None when the last window still has too many.

    `samples` must be sorted by time.
    """
    times = [at for at, _, _ in samples if at >= after]
    hits = [v == version for at, v, _ in samples if at >= after]
    n = len(times)
    prefix = [0]
    for hit in hits:
        prefix.append(prefix[-1] + hit)
    end = n
    settled: float | None = None
    # Walk windows from the last one back; stop at the first that is not good enough.
    for i in range(n - 1, -1, -1):
        while end > i and times[end - 1] >= times[i] + window:
            end -= 1
        if (prefix[end] - prefix[i]) / (end - i) >= threshold:
            break
        settled = times[i]
    return settled


class LiveLoad:
    """Steady load through `loadgen.generate` whose `samples` grow while it runs.

    In async code: `task = asyncio.create_task(load.run())`, cancel or `stop()` to end it.
    In plain code: `load.start_in_thread()` ... `load.stop()`; there, `responses_after` waits
    for a number of responses, a measure of traffic that a busy machine cannot shrink.
    """

    def __init__(
        self,
        url: str,
        host: str,
        rps: float = 50.0,
        max_seconds: float = 600.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.host = host
        self.headers = dict(headers or {})
        self.rps = rps
        self.max_seconds = max_seconds  # the load always ends by itself
        self._result = LoadResult()
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._thread: threading.Thread | None = None

    @property
    def samples(self) -> list[Sample]:
        return [(self._began + at, v, code) for at, v, code in list(self._result.samples)]

    async def run(self) -> None:
        self._began = time.monotonic()
        await generate(
            self.url,
            host=self.host,
            duration=self.max_seconds,
            rps=self.rps,
            result=self._result,
            stop=self._stop,
            headers=self.headers,
        )

    def start_in_thread(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self.run(),), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def recent(self, seconds: float, now: float | None = None) -> Split:
        now = time.monotonic() if now is None else now
        return split(self.samples, now - seconds, now + 1.0)

    def seen(self, version: str) -> bool:
        """Whether any response so far was served by `version`."""
        return any(v == version for _, v, _ in self.samples)

    async def wait_for(self, version: str, timeout: float) -> None:
        """Until some response was served by `version`."""

        async def seen() -> bool:
            return self.seen(version)

        await wait_until_async(seen, f"a response from version {version}", timeout)

    def responses_after(self, start: float, count: int, timeout: float = 60.0) -> list[Sample]:
        """The first `count` responses that arrived after `start` (a time.monotonic()
        reading), once that many have: from plain code, with the load in its thread."""
        arrived = wait_until(
            lambda: [s for s in self.samples if s[0] > start],
            f"{count} responses after t={start:.1f}",
            timeout,
            until=lambda got: len(got) >= count,
        )
        return arrived[:count]
