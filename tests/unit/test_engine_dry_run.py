"""Dry-run metrics (`dryRun: true`): measured, judged and recorded like the others, and never
deciding: a failing, empty or erring dry-run metric neither rolls back, holds a step nor
counts toward a limit, in a step's analysis and in a wave's gate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_engine import MINUTE, T0, at, events, rolling, step, weights

from tidegate.analysis import Measurement
from tidegate.api import MetricPhase, RegionStatus, RolloutPhase, RolloutSpec, WaveRegion
from tidegate.waves import Reason, _metrics_verdict

SHADOW = {
    "name": "p99-shadow",
    "query": "shadow",
    "thresholdRange": {"max": 0.1},
    "dryRun": True,
}


def spec_with(*metrics: dict[str, Any]) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "app"},
            "service": {"name": "app", "port": 80},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 60}]}},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
            "analysis": {"interval": "1m", "failureLimit": 1, "metrics": list(metrics)},
        }
    )


ERROR_RATE = {"name": "error-rate", "query": "q", "thresholdRange": {"min": 0, "max": 0.05}}
SHADOW_OUTCOMES = [
    (Measurement("p99-shadow", 0.9), MetricPhase.FAILED),
    (Measurement("p99-shadow", None), MetricPhase.NO_DATA),
    (Measurement("p99-shadow", None, "timeout"), MetricPhase.ERROR),
]


@pytest.mark.parametrize(("shadow", "phase"), SHADOW_OUTCOMES, ids=["failed", "nodata", "error"])
def test_a_dry_run_metric_is_recorded_and_never_decides(
    shadow: Measurement, phase: MetricPhase
) -> None:
    spec = spec_with(ERROR_RATE, SHADOW)
    decision = step(
        spec, rolling(spec), at(T0 + MINUTE, measurements=(Measurement("error-rate", 0.01), shadow))
    )
    st = decision.status
    # The real metric passed, so the step is done: the dry run held nothing.
    assert weights(decision) == [60]
    assert (st.failed_checks, st.inconclusive_checks) == (0, 0)
    assert not {"CheckFailed", "CheckInconclusive", "RolledBack"} & set(events(decision))
    recorded = {m.name: m for m in st.metrics}
    assert recorded["p99-shadow"].phase is phase
    assert recorded["p99-shadow"].dry_run is True
    assert "dry run" in recorded["p99-shadow"].message
    assert recorded["error-rate"].dry_run is None


def test_the_same_metric_not_in_dry_run_rolls_back() -> None:
    """The control: with dryRun off, the same answer ends the rollout (failureLimit 1)."""
    spec = spec_with(ERROR_RATE, {**SHADOW, "dryRun": False})
    decision = step(
        spec,
        rolling(spec),
        at(
            T0 + MINUTE,
            measurements=(Measurement("error-rate", 0.01), Measurement("p99-shadow", 0.9)),
        ),
    )
    assert decision.status.phase is RolloutPhase.FAILED
    assert weights(decision) == [0]


def test_only_dry_run_metrics_still_measure_each_interval_and_promote() -> None:
    spec = spec_with(SHADOW)
    st = rolling(spec)
    for n in (1, 2):
        decision = step(
            spec, st, at(T0 + n * MINUTE, measurements=(Measurement("p99-shadow", 0.9),))
        )
        st = decision.status
        assert st.metrics[0].phase is MetricPhase.FAILED and st.metrics[0].dry_run
    assert st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)
    assert st.failed_checks == 0 and st.current_step_index >= 1


def test_a_wave_gate_shows_a_failing_dry_run_metric_and_is_not_held_by_it() -> None:
    region = WaveRegion.model_validate(
        {
            "cluster": "a",
            "kubeconfigSecretRef": {"name": "a", "key": "kubeconfig"},
            "rollout": "app",
            "metrics": [ERROR_RATE, SHADOW],
        }
    )
    measured = (Measurement("error-rate", 0.01), Measurement("p99-shadow", 0.9))
    results, _, reason, _ = _metrics_verdict(region, None, measured, T0, timedelta(minutes=1))
    assert reason is Reason.READY
    assert [(r.name, r.phase, r.dry_run) for r in results] == [
        ("error-rate", MetricPhase.PASSED, None),
        ("p99-shadow", MetricPhase.FAILED, True),
    ]
    # As read back from the status on a later call (no new measurement): still not held.
    previous = RegionStatus.model_validate(
        RegionStatus(cluster="a", metrics=results, next_measurement_at=T0).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    )
    _, _, again, _ = _metrics_verdict(region, previous, None, T0, timedelta(minutes=1))
    assert again is Reason.READY
