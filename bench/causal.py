"""A bad canary's rollback as causally ordered events, the same for every controller.

    first 5xx at the load generator
      -> the failing measurement (the controller's own record of it)
      -> the write that takes the canary's traffic away (when the API server received it)
      -> the gateway applies it (its /plans: the route's share for the bad version is 0)
      -> 99 % on stable: the first 1 s window, starting at or after that, from which on
         under 1 % of responses come from the bad version

(b) "first 5xx -> 99 % on stable" is measured to the last event, so it can never come out
shorter than the decision it depends on (as taking the last canary response seen could,
with a few canary requests a second). The gateway's share of it, "write -> applied", is
reported apart: it is the same gateway for every controller.

Pure: works on recorded samples, audit requests and plan history. All times are wall
clock (time.time()) except the load's samples, which are on time.monotonic() and are
shifted by `offset` (time.time() - time.monotonic()).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tidegate_devenv.audit import AuditedRequest
from tidegate_devenv.traffic import Sample, first_error_at, settled_at


@dataclass(frozen=True)
class Rollback:
    """The events' times (wall clock); None when the run did not see one."""

    first_error: float
    measured: float | None
    write: float | None
    applied: float | None
    settled: float | None

    @staticmethod
    def _gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else b - a

    def figures(self) -> dict[str, float | None]:
        return {
            "errors_to_stable": self._gap(self.first_error, self.settled),  # (b)
            "errors_to_measurement": self._gap(self.first_error, self.measured),
            "measurement_to_write": self._gap(self.measured, self.write),  # (a), API side
            "write_to_applied": self._gap(self.write, self.applied),  # the gateway's part
            "applied_to_stable": self._gap(self.applied, self.settled),
        }

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.figures()}


def applied_at(
    plans: Iterable[Mapping[str, Any]], route: str, version: str, after: float
) -> float | None:
    """When the gateway first applied a configuration of `route` (at or after `after`) that
    sends `version` nothing. `plans` as GET /plans returns them, oldest first."""
    return next(
        (
            float(p["at"])
            for p in plans
            if p["route"] == route and p["at"] >= after and not p["shares"].get(version)
        ),
        None,
    )


def first_write(
    requests: Iterable[AuditedRequest],
    namespace: str,
    resources: Iterable[str],
    after: float,
) -> float | None:
    """When the API server received the first write to one of `resources` in `namespace`
    at or after `after` (requests already narrowed to one controller's). Received, not
    completed: the API server logs a response complete after its watchers may already
    have the change, so "write -> applied" would read a little below zero."""
    wanted = set(resources)
    times = [
        r.received.timestamp()
        for r in requests
        if r.is_write
        and r.call is not None
        and r.call.resource in wanted
        and r.namespace == namespace
        and r.received is not None
        and r.received.timestamp() >= after
    ]
    return min(times, default=None)


def rollback(
    samples: Sequence[Sample],
    offset: float,
    changed: float,
    bad_version: str,
    measured: float | None,
    write: float | None,
    applied: float | None,
) -> Rollback | None:
    """The events of one run; None when the load saw no 5xx after `changed` (monotonic)."""
    first = first_error_at(samples, after=changed)
    if first is None:
        return None
    settled = None
    if applied is not None:
        at = settled_at(samples, bad_version, after=applied - offset)
        settled = None if at is None else at + offset
    return Rollback(first + offset, measured, write, applied, settled)
