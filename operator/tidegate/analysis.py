"""Judging measurements: one metric's value against its thresholdRange.

Pure: the values come in (`Measurement`, as the metrics port returns them), a result goes
out (`MetricResult`, as the status stores it). Used for a step's analysis and for the
metrics a wave checks in an earlier region. A dry-run metric is judged like any other, and
its verdict is left out of what decides (`deciding`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from tidegate.api import Metric, MetricPhase, MetricResult


@dataclass(frozen=True)
class Measurement:
    metric: str
    value: float | None  # None: the query returned no data
    error: str | None = None


@dataclass(frozen=True)
class Verdict:
    metric: Metric
    result: MetricResult
    passed: bool


def judge(metric: Metric, measurement: Measurement | None, now: datetime) -> Verdict:
    name, bounds = metric.name, metric.threshold_range
    value = None if measurement is None else measurement.value
    subject = f'metric "{name}"'
    if measurement is not None and measurement.error is not None:
        # Cut: an error's text can be any length, the status's message cannot.
        phase, text = MetricPhase.ERROR, f"{subject} query failed: {measurement.error[:2000]}"
    elif value is None:
        phase, text = MetricPhase.NO_DATA, f"{subject} returned no data"
    elif math.isnan(value):  # a ratio over nothing: there is nothing to judge
        phase, text, value = MetricPhase.NO_DATA, f"{subject} returned NaN", None
    elif bounds is None:  # a template's metric is judged only once resolved
        phase, text = MetricPhase.ERROR, f"{subject} has no thresholdRange"
    elif bounds.contains(value):
        phase, text = MetricPhase.PASSED, f"{subject} value {value:g} within {bounds.describe()}"
    else:
        phase, text = MetricPhase.FAILED, f"{subject} value {value:g} outside {bounds.describe()}"
    if metric.dry_run:
        text = f"{text} (dry run: never decides)"
    result = MetricResult(
        name=name,
        phase=phase,
        value=value,
        message=text,
        measured_at=now,
        dry_run=True if metric.dry_run else None,
    )
    return Verdict(metric=metric, result=result, passed=phase is MetricPhase.PASSED)


def deciding(verdicts: list[Verdict]) -> list[Verdict]:
    """The verdicts that decide: a dry-run metric's is recorded and never acted on."""
    return [v for v in verdicts if not v.metric.dry_run]
