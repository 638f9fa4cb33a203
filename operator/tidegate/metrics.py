"""The operator's own metrics, served on `--metrics-listen` at `/metrics`.

A counter of reconciles lets a person (and the e2e tests) see that the operator is alive and
looking at its rollouts even while it has nothing to write; a gauge says whether this replica
is the one that acts; a histogram of step latencies shows how long a passing analysis waits
for its route write. Per rollout: its phase, weight and step as gauges, its analysis
outcomes and ends as counters; deploy/grafana/tidegate.json draws them. Only the replica
that acts has per-rollout series; they go when the rollout does. Notifications are counted by
provider and result (sent, failed, dropped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "tidegate_reconciles",
    "Reconciles of ProgressiveRollouts run by this process, by result (ok or error).",
    ["result"],
    registry=REGISTRY,
)

LEADER = Gauge(
    "tidegate_leader",
    "1 while this process is the one that acts on rollouts (it holds the leader-election "
    "Lease, or runs with --no-leader-election); 0 while it stands by.",
    registry=REGISTRY,
)

# From a passing analysis (the measurement's start, its status.metrics[].measuredAt) to the
# route holding the next step's weights, in that reconcile: the operator's own part of a step.
STEP_LATENCY = Histogram(
    "tidegate_step_latency_seconds",
    "Seconds from the start of an analysis that passed to the routes written for the next "
    "step, in the same reconcile.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)

ROLLOUT_INFO = Gauge(
    "tidegate_rollout_info",
    "1 for each rollout, labelled with its strategy and current phase.",
    ["namespace", "name", "strategy", "phase"],
    registry=REGISTRY,
)
CANARY_WEIGHT = Gauge(
    "tidegate_rollout_canary_weight",
    "Percent of the live traffic the routes give the new version (canary, or green).",
    ["namespace", "name"],
    registry=REGISTRY,
)
STEP = Gauge(
    "tidegate_rollout_step",
    "The current step's index, from 0 (the number of steps once past the last).",
    ["namespace", "name"],
    registry=REGISTRY,
)
MEASUREMENTS = Counter(
    "tidegate_analysis_measurements",
    "Measurements judged, by metric and result (passed, failed, nodata, error); "
    'dry_run is "true" for a metric that never decides.',
    ["namespace", "name", "metric", "result", "dry_run"],
    registry=REGISTRY,
)
ROLLOUTS = Counter(
    "tidegate_rollouts",
    "Rollouts ended, by result (succeeded, failed, aborted, cancelled).",
    ["namespace", "name", "result"],
    registry=REGISTRY,
)
ROLLOUT_DURATION = Histogram(
    "tidegate_rollout_duration_seconds",
    "From a rollout's start to its end, whatever the result.",
    buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "tidegate_reconcile_duration_seconds",
    "Seconds one reconcile of one rollout took, its reads, writes and queries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
KUBE_REQUESTS = Counter(
    "tidegate_kube_requests",
    "Requests tidegate made to the API server (kopf's watches apart), by verb, resource "
    'and response code ("2xx" for success, "0" when no answer came).',
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
METRIC_QUERY_DURATION = Histogram(
    "tidegate_metric_query_duration_seconds",
    "Seconds a metric provider took to answer one query, failures included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)

NOTIFICATIONS = Counter(
    "tidegate_notifications",
    "Notifications by provider (a key of the notifications Secret) and result: sent, failed "
    "(every attempt failed, or the provider refused it), dropped (the queue was full).",
    ["provider", "result"],
    registry=REGISTRY,
)

_ROLLOUT_GAUGES = (CANARY_WEIGHT, STEP)
_ENDED = {
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Aborted": "aborted",
    "Cancelled": "cancelled",
}
_MEASUREMENT_RESULTS = {
    "Passed": "passed",
    "Failed": "failed",
    "NoData": "nodata",
    "Error": "error",
}
# The label values each rollout's info gauge has now, to remove the old ones on a change.
_info_labels: dict[tuple[str, str], tuple[str, str]] = {}


def observe_rollout(
    namespace: str,
    name: str,
    strategy: str,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    measured: bool,
    now: datetime,
) -> None:
    """What a reconcile decided, from the status before and after it (wire form)."""
    phase = str(after.get("phase") or "")
    labels = (strategy, phase)
    if _info_labels.get((namespace, name)) != labels:
        _remove_info(namespace, name)
        ROLLOUT_INFO.labels(namespace, name, strategy, phase).set(1)
        _info_labels[(namespace, name)] = labels
    CANARY_WEIGHT.labels(namespace, name).set(float(after.get("canaryWeight") or 0))
    STEP.labels(namespace, name).set(float(after.get("currentStepIndex") or 0))
    if measured:
        for result in after.get("metrics") or []:
            outcome = _MEASUREMENT_RESULTS.get(str(result.get("phase")), "error")
            dry_run = "true" if result.get("dryRun") else "false"
            MEASUREMENTS.labels(namespace, name, str(result.get("name")), outcome, dry_run).inc()
    ended = _ENDED.get(phase)
    if ended and before.get("phase") != phase and before.get("phase") in _RUNNING:
        ROLLOUTS.labels(namespace, name, ended).inc()
        started = after.get("rolloutStartedAt") or before.get("rolloutStartedAt")
        if started:
            began = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
            ROLLOUT_DURATION.observe(max((now - began).total_seconds(), 0.0))


_RUNNING = ("Progressing", "Paused", "Promoting")


def _remove_info(namespace: str, name: str) -> None:
    old = _info_labels.pop((namespace, name), None)
    if old is not None:
        ROLLOUT_INFO.remove(namespace, name, *old)


def forget_rollout(namespace: str, name: str) -> None:
    """Drop a rollout's gauges: it is gone, or another replica acts on it now."""
    _remove_info(namespace, name)
    for gauge in _ROLLOUT_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, name)


CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
