"""Waves: whether the regions before this one let a release start here, and whether a region
after it rejected a release this one already took. Pure, like the engine that calls it.

There is no hub. Every cluster runs its own tidegate and its own rollout, which reads the
other regions' rollouts (through a read-only kubeconfig, from a watch: see
`tidegate.adapters.regions`) and compares their status with its own:

- `status.stableRelease`/`canaryRelease` say which release a region runs or tries, in the
  form `spec.waves.release` gives (`tidegate.revisions.release_of`), so two regions compare
  releases, never their clusters' own revision digests;
- `status.stableSince` says since when, which is what a soak is counted from;
- a region rejects a release when it rolled it back (`Failed` or `Aborted` with it as its
  `canaryRelease`) or went back from it at once (`status.rejectedRelease`: an undo, or
  spec.rollbackWindow).

A region that cannot be read is a reason to wait, never a pass (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from tidegate.analysis import Measurement, judge
from tidegate.api import (
    MetricPhase,
    MetricResult,
    RegionStatus,
    RolloutPhase,
    WaveRegion,
)
from tidegate.durations import format_duration, parse_duration

# The reason (Degraded, Event) of a region that went back to follow a region before it.
FOLLOWED_REASON = "RevertedWithUpstream"


@dataclass(frozen=True)
class RemoteRollout:
    """The fields of another region's rollout that waves read (from its status)."""

    phase: str | None
    stable_release: str | None
    canary_release: str | None
    stable_since: datetime | None
    # The release it went back from at once (an undo, or spec.rollbackWindow).
    rejected_release: str | None = None
    # It rolled its stable release back only to follow a region before it
    # (RevertedWithUpstream), not on a judgement of its own.
    followed: bool = False


@dataclass(frozen=True)
class RegionRead:
    """One region, as its watch last saw it."""

    reachable: bool
    rollout: RemoteRollout | None = None  # None while reachable: the rollout does not exist
    error: str = ""  # why it cannot be read


class Reason(StrEnum):
    READY = "Ready"
    NOT_FOUND = "NotFound"
    NOT_ROLLED_OUT = "NotRolledOut"
    ROLLING_OUT = "RollingOut"
    SOAKING = "Soaking"
    METRICS_PENDING = "MetricsPending"
    METRICS_FAILING = "MetricsFailing"
    METRICS_INCONCLUSIVE = "MetricsInconclusive"
    UNREACHABLE = "Unreachable"
    REJECTED = "Rejected"


# The region's release is stable there: its metrics mean something from now on.
MEASURED_REASONS = frozenset(
    {
        Reason.SOAKING,
        Reason.METRICS_PENDING,
        Reason.METRICS_FAILING,
        Reason.METRICS_INCONCLUSIVE,
        Reason.READY,
    }
)
_REJECTING_PHASES = frozenset({RolloutPhase.FAILED.value, RolloutPhase.ABORTED.value})
_RUNNING_PHASES = frozenset(
    {
        RolloutPhase.PROGRESSING.value,
        RolloutPhase.PAUSED.value,
        RolloutPhase.PROMOTING.value,
        RolloutPhase.WAITING_FOR_WAVE.value,
    }
)


def rejection(remote: RemoteRollout | None, release: str) -> str | None:
    """How the region rejected `release` (None: it did not): rolled it back, or went back
    from it at once."""
    if remote is None:
        return None
    if remote.canary_release == release and remote.phase in _REJECTING_PHASES:
        return f"rolled the release back ({remote.phase})"
    if remote.rejected_release == release and remote.stable_release != release:
        return "went back from the release (undo or rollbackWindow)"
    return None


@dataclass(frozen=True)
class Gate:
    """What the regions before this one say about a release, all of them judged."""

    regions: tuple[RegionStatus, ...]
    wake_at: datetime | None  # when a soak ends or a measurement is due

    @property
    def rejected(self) -> RegionStatus | None:
        return next((r for r in self.regions if r.reason == Reason.REJECTED), None)

    @property
    def waiting(self) -> RegionStatus | None:
        return next((r for r in self.regions if not r.ready), None)

    def describe(self) -> str:
        """Why the release waits, region by region."""
        return "; ".join(f"{r.cluster}: {r.message}" for r in self.regions if not r.ready)


def _remaining(delta: timedelta) -> str:
    return format_duration(timedelta(seconds=max(0, round(delta.total_seconds()))))


def _metrics_verdict(
    region: WaveRegion,
    previous: RegionStatus | None,
    measured: tuple[Measurement, ...] | None,
    now: datetime,
    interval: timedelta,
) -> tuple[list[MetricResult], datetime | None, Reason, str]:
    """The region's metrics: measured this call, else as last measured."""
    if measured is not None:
        by_name = {m.metric: m for m in measured}
        results = [judge(m, by_name.get(m.name), now).result for m in region.metrics]
        due: datetime | None = now + interval
    else:
        results = list(previous.metrics) if previous is not None else []
        due = previous.next_measurement_at if previous is not None else None
        if due is None:
            due = now  # never measured yet: at once
    if len(results) != len(region.metrics):
        return results, due, Reason.METRICS_PENDING, "stable there; measuring its metrics"
    # A dry-run metric is shown with the others and never holds the release.
    decide = [r for r in results if not r.dry_run]
    failed = [r for r in decide if r.phase is MetricPhase.FAILED]
    if failed:
        return (
            results,
            due,
            Reason.METRICS_FAILING,
            "metrics failing: " + "; ".join(r.message for r in failed),
        )
    unjudged = [r for r in decide if r.phase is not MetricPhase.PASSED]
    if unjudged:
        return (
            results,
            due,
            Reason.METRICS_INCONCLUSIVE,
            "metrics inconclusive: " + "; ".join(r.message for r in unjudged),
        )
    return results, due, Reason.READY, "metrics passing"


def _judge_region(
    region: WaveRegion,
    read: RegionRead | None,
    release: str,
    previous: RegionStatus | None,
    measured: tuple[Measurement, ...] | None,
    now: datetime,
    interval: timedelta,
) -> tuple[RegionStatus, datetime | None]:
    where = f"{region.namespace + '/' if region.namespace else ''}{region.rollout}"

    def status(
        reason: Reason,
        message: str,
        metrics: Sequence[MetricResult] = (),
        due: datetime | None = None,
    ) -> RegionStatus:
        return RegionStatus(
            cluster=region.cluster,
            ready=reason is Reason.READY,
            reason=reason.value,
            message=message,
            phase=remote.phase if remote is not None else None,
            metrics=list(metrics),
            next_measurement_at=due,
        )

    remote = read.rollout if read is not None else None
    if read is None or not read.reachable:
        why = read.error if read is not None and read.error else "not read yet"
        return status(Reason.UNREACHABLE, f"unreachable: {why}"[:2000]), None
    if remote is None:
        return status(Reason.NOT_FOUND, f"rollout {where} does not exist there"), None
    rejected = rejection(remote, release)
    if rejected is not None:
        return status(Reason.REJECTED, rejected), None
    if remote.stable_release != release:
        if remote.canary_release == release and remote.phase in _RUNNING_PHASES:
            return status(Reason.ROLLING_OUT, f"not yet rolled out there ({remote.phase})"), None
        return status(Reason.NOT_ROLLED_OUT, "not yet rolled out there"), None
    soak = parse_duration(region.soak)
    wake: datetime | None = None
    soaked = remote.stable_since is not None and now >= remote.stable_since + soak
    results: list[MetricResult] = []
    due: datetime | None = None
    reason, message = Reason.READY, "stable there"
    if region.metrics:
        results, due, reason, message = _metrics_verdict(region, previous, measured, now, interval)
        wake = due
    if not soaked:
        if remote.stable_since is None:
            left = f"soaking: {region.soak} left (stable since an unknown time)"
        else:
            end = remote.stable_since + soak
            left = (
                f"soaking: {_remaining(end - now)} of {region.soak} left "
                f"(until {end:%Y-%m-%dT%H:%M:%SZ})"
            )
            wake = end if wake is None else min(wake, end)
        if reason is Reason.READY:
            reason, message = Reason.SOAKING, left
        else:
            message = f"{left}; {message}"
    elif region.metrics and reason is Reason.READY:
        message = f"stable there for {region.soak} or more; metrics passing"
    elif reason is Reason.READY:
        message = f"stable there for {region.soak} or more"
    return status(reason, message, results, due), wake


def judge_after(
    regions: Sequence[WaveRegion],
    reads: Mapping[str, RegionRead],
    release: str,
    previous: Sequence[RegionStatus],
    measurements: Mapping[str, tuple[Measurement, ...]],
    now: datetime,
    interval: timedelta,
) -> Gate:
    """Judge every region under waves.after for `release`. `previous` is the status of the
    last call (for metrics measured then); `measurements` those made for this call."""
    before = {r.cluster: r for r in previous}
    judged: list[RegionStatus] = []
    wakes: list[datetime] = []
    for region in regions:
        result, wake = _judge_region(
            region,
            reads.get(region.cluster),
            release,
            before.get(region.cluster),
            measurements.get(region.cluster),
            now,
            interval,
        )
        judged.append(result)
        if wake is not None:
            wakes.append(wake)
    return Gate(regions=tuple(judged), wake_at=min(wakes) if wakes else None)


def regions_to_measure(
    regions: Sequence[WaveRegion], previous: Sequence[RegionStatus], now: datetime
) -> tuple[str, ...]:
    """The regions whose metrics are due: those with metrics whose release is stable there
    (as the last call saw), at their interval."""
    last = {r.cluster: r for r in previous}
    due: list[str] = []
    for region in regions:
        status = last.get(region.cluster)
        if not region.metrics or status is None or status.reason not in MEASURED_REASONS:
            continue
        if status.next_measurement_at is None or now >= status.next_measurement_at:
            due.append(region.cluster)
    return tuple(due)


def rejecting_region(
    regions: Sequence[WaveRegion],
    reads: Mapping[str, RegionRead],
    release: str,
    *,
    later: bool = False,
) -> tuple[str, str] | None:
    """The first of `regions` (waves.after; waves.before when `later`) that rejected
    `release`, and how (see `rejection`). A later region that went back only to follow a
    region before it is not counted: it judged nothing itself, and counting it would take
    back here what this region (or one before it) decided to keep."""
    for region in regions:
        read = reads.get(region.cluster)
        remote = read.rollout if read is not None else None
        if later and remote is not None and remote.followed:
            continue
        how = rejection(remote, release)
        if how is not None:
            return region.cluster, how
    return None
