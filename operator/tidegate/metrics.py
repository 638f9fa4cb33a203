"""The operator's own metrics, served on the health endpoint's `/metrics`.

A counter of reconciles lets a person (and the e2e tests) see that the operator is alive and
looking at its rollouts even while it has nothing to write; a gauge says whether this replica
is the one that acts; a histogram of step latencies shows how long a passing analysis waits
for its route write.
"""

from __future__ import annotations

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

CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
