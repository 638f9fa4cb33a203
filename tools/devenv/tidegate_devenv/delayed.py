"""A copy of cluster objects that takes in each change a while after it was seen.

Real gateways apply an HTTPRoute change from a few hundred milliseconds to seconds after it
is written, and their endpoints lag the pods. `DelayedView` stands for that: a change seen
at `now` is applied at `now + delay + jitter`, the jitter uniform in
[0, min(0.2 * delay, 0.5)] seconds. Changes are applied in the order they were seen, all
objects together, even when their jitters would cross: a gateway takes its configuration
(routes, endpoints) from ordered watch events, so it may be late but never sees a pod's
replacement ready after the pod it replaced is gone.

Pure: the caller supplies the clock readings and drives `apply_due`.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str]
Obj = Mapping[str, Any]

# The kinds the gateway's informers report, by their informer names.
ROUTES = "httproutes"
SERVICES = "services"
PODS = "pods"

JITTER_SHARE = 0.2
JITTER_CAP = 0.5


def seconds_arg(value: str) -> float:
    """A delay given on a command line or in the environment: seconds, >= 0."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {value!r}")
    return seconds


def max_jitter(delay: float) -> float:
    return min(JITTER_SHARE * delay, JITTER_CAP)


@dataclass(frozen=True, order=True)
class Change:
    """One object's new state (None: deleted), due at `due`; `seq` keeps the seen order
    among changes due at the same moment."""

    due: float
    seq: int
    kind: str = field(compare=False)
    key: Key = field(compare=False)
    obj: Obj | None = field(compare=False)


class DelayedView:
    def __init__(self, delay: float, rng: random.Random | None = None) -> None:
        if delay < 0 or not math.isfinite(delay):
            raise ValueError(f"a route delay is a finite number of seconds >= 0, not {delay}")
        self.delay = delay
        self._rng = rng or random.Random()
        self._applied: dict[str, dict[Key, Obj]] = {}
        self._queue: list[Change] = []
        self._seq = itertools.count()
        self.latest_due = -math.inf

    def items(self, kind: str) -> Iterable[Obj]:
        """The applied objects of `kind`."""
        return self._applied.get(kind, {}).values()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def seen(self, kind: str, key: Key, obj: Obj | None, now: float) -> bool:
        """Record a change seen at `now`; True when it was applied at once (no delay)."""
        if self.delay == 0:
            self._apply(kind, key, obj)
            return True
        due = now + self.delay + self._rng.uniform(0.0, max_jitter(self.delay))
        due = max(due, self.latest_due)  # never before a change seen earlier
        change = Change(due, next(self._seq), kind, key, obj)
        heapq.heappush(self._queue, change)
        self.latest_due = max(self.latest_due, due)
        return False

    def next_due(self) -> float | None:
        """When the next pending change falls due; None when nothing is pending."""
        return self._queue[0].due if self._queue else None

    def apply_due(self, now: float) -> bool:
        """Apply every change due by `now`, oldest first; True when any was."""
        applied = False
        while self._queue and self._queue[0].due <= now:
            change = heapq.heappop(self._queue)
            self._apply(change.kind, change.key, change.obj)
            applied = True
        return applied

    def _apply(self, kind: str, key: Key, obj: Obj | None) -> None:
        objects = self._applied.setdefault(kind, {})
        if obj is None:
            objects.pop(key, None)
        else:
            objects[key] = obj
