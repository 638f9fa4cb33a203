from datetime import UTC, datetime

from tidegate import metrics

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def value(sample: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(sample, labels)


def test_a_rollouts_phase_weight_step_outcomes_and_end() -> None:
    ns, name = "m-ns", "shop"
    start = {"phase": "Progressing", "rolloutStartedAt": "2026-01-01T11:58:00Z"}
    analysing = {
        **start,
        "canaryWeight": 30,
        "currentStepIndex": 1,
        "metrics": [
            {"name": "error-rate", "phase": "Passed"},
            {"name": "latency", "phase": "NoData"},
            {"name": "p99-shadow", "phase": "Failed", "dryRun": True},
        ],
    }
    metrics.observe_rollout(ns, name, "canary", start, analysing, True, NOW)
    metrics.observe_rollout(ns, name, "canary", analysing, analysing, False, NOW)
    info = {"namespace": ns, "name": name, "strategy": "canary"}
    assert value("tidegate_rollout_info", **info, phase="Progressing") == 1
    assert value("tidegate_rollout_canary_weight", namespace=ns, name=name) == 30
    assert value("tidegate_rollout_step", namespace=ns, name=name) == 1
    counted = {"namespace": ns, "name": name}
    assert (
        value(
            "tidegate_analysis_measurements_total",
            **counted,
            metric="error-rate",
            result="passed",
            dry_run="false",
        )
        == 1
    )
    assert (
        value(
            "tidegate_analysis_measurements_total",
            **counted,
            metric="latency",
            result="nodata",
            dry_run="false",
        )
        == 1
    )
    # A dry-run metric is exported like the others, told apart by its label.
    assert (
        value(
            "tidegate_analysis_measurements_total",
            **counted,
            metric="p99-shadow",
            result="failed",
            dry_run="true",
        )
        == 1
    )

    duration_before = value("tidegate_rollout_duration_seconds_sum") or 0.0
    failed = {**analysing, "phase": "Failed", "canaryWeight": 0}
    metrics.observe_rollout(ns, name, "canary", analysing, failed, False, NOW)
    metrics.observe_rollout(ns, name, "canary", failed, failed, False, NOW)  # counted once
    assert value("tidegate_rollouts_total", **counted, result="failed") == 1
    assert value("tidegate_rollout_duration_seconds_sum") == duration_before + 120
    assert value("tidegate_rollout_info", **info, phase="Progressing") is None
    assert value("tidegate_rollout_info", **info, phase="Failed") == 1

    metrics.forget_rollout(ns, name)
    assert value("tidegate_rollout_info", **info, phase="Failed") is None
    assert value("tidegate_rollout_canary_weight", namespace=ns, name=name) is None
