"""The operator's own metrics, served on the health endpoint's `/metrics`.

A counter of reconciles lets a person (and the e2e tests) see that the operator is alive and
looking at its rollouts even while it has nothing to write; a gauge says whether this replica
is the one that acts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
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

CONTENT_TYPE = CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(REGISTRY)
