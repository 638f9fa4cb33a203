"""Whatever a rollout's author writes, validation answers with the fields at fault, never an
exception, and a spec it lets through drives the engine without one (a new version, from
nothing, through a few passes with passing and failing measurements)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings

from hostile_specs import rollout_specs
from tidegate import api, validation
from tidegate.adapters.gatewayapi import GatewayAPIRouter
from tidegate.adapters.service_router import ServiceSelectorRouter
from tidegate.analysis import Measurement
from tidegate.engine import Observation, WorkloadState, reconcile
from tidegate.engine.model import status_traffic

T0 = datetime(2026, 12, 1, tzinfo=UTC)
SEEN = {"valid": 0, "refused": 0}


def capabilities(spec: api.RolloutSpec) -> frozenset[str]:
    if spec.traffic_routing.router == "service":
        return ServiceSelectorRouter.capabilities
    return GatewayAPIRouter.capabilities


def drive(spec: api.RolloutSpec) -> None:
    """A few passes of the engine: adoption, then a new revision with measurements."""
    status = api.RolloutStatus()
    for n in range(6):
        now = T0 + timedelta(seconds=30 * n)
        stable = WorkloadState(revision=status.stable_revision or "v1", replicas=2, ready=True)
        canary = WorkloadState(revision="v2", replicas=2, ready=True) if n >= 2 else None
        value = 0.0 if n % 2 else 1e9
        obs = Observation(
            now=now,
            generation=1,
            target_revision="v1" if n < 2 else "v2",
            target_replicas=2,
            stable=stable,
            canary=canary,
            measurements=tuple(Measurement(m.name, value) for m in spec.analysis.metrics),
        )
        obs = replace(obs, traffic=status_traffic(status))
        status = reconcile(spec, status, obs).status


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollout_specs())
def refused_by_field_or_driven(spec: dict[str, Any]) -> None:
    parsed, problems = validation.spec_problems(spec, capabilities)
    for problem in problems:
        assert str(problem).startswith("spec"), problem
    if parsed is None or problems:
        assert problems
        SEEN["refused"] += 1
        return
    SEEN["valid"] += 1
    drive(parsed)


def test_any_spec_is_refused_by_field_or_drives_the_engine() -> None:
    """2,000 specs; the count shows the run saw valid and broken ones in numbers."""
    SEEN.update(valid=0, refused=0)
    refused_by_field_or_driven()
    print(f"hostile specs: {SEEN['valid']} valid, {SEEN['refused']} refused")
    assert SEEN["valid"] >= 50 and SEEN["refused"] >= 500, SEEN
