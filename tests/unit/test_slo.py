"""SLO burn-rate gates (spec.analysis.slo): each window pair is one metric whose query gives
the lower of its two burn rates, judged against burnRate, so a step fails only when both
windows burn too fast."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from test_engine import MINUTE, T0, at, rolling, step, weights

from tidegate import slo
from tidegate.analysis import Measurement
from tidegate.api import Analysis, RolloutPhase, RolloutSpec
from tidegate.strategies.common import analysis_enabled

ERRORS = 'sum(rate(requests_total{ns="{{ namespace }}", code=~"5.."}[{{ window }}])) or vector(0)'
TOTAL = 'sum(rate(requests_total{ns="{{namespace}}"}[{{window}}]))'


def gated(**slo_fields: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "app"},
            "service": {"name": "app", "port": 80},
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"setWeight": 60}]}},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
            "analysis": {
                "interval": "1m",
                "failureLimit": 1,
                "slo": {"objective": 0.99, "errorQuery": ERRORS, "totalQuery": TOTAL} | slo_fields,
            },
        }
    )


def test_the_default_windows_are_the_two_page_worthy_pairs() -> None:
    spec = gated()
    names = [m.name for m in slo.checked_metrics(spec.analysis)]
    assert names == ["slo-burn-1h-5m", "slo-burn-6h-30m"]
    bounds = [
        m.threshold_range.max for m in slo.checked_metrics(spec.analysis) if m.threshold_range
    ]
    assert bounds == [14.4, 6.0]
    assert analysis_enabled(spec)  # an SLO alone is something to check


def test_a_burn_query_takes_the_lower_rate_of_its_two_windows_over_the_budget() -> None:
    spec = gated(windows=[{"long": "1h", "short": "5m", "burnRate": 14.4}])
    assert spec.analysis.slo is not None
    query = slo.burn_query(spec.analysis.slo, spec.analysis.slo.windows[0])
    assert query.startswith("min(") and query.endswith(") / 0.01")
    # Each window's ratio, its own window in seconds; the other variables left to fill in.
    assert query.count("[3600s]") == 2 and query.count("[300s]") == 2
    assert "{{ window }}" not in query and "{{window}}" not in query
    assert "{{ namespace }}" in query and "{{namespace}}" in query
    assert '"window", "long"' in query and '"window", "short"' in query


def burning(rate: float) -> tuple[Measurement, ...]:
    return (Measurement("slo-burn-1h-5m", rate),)


def test_a_canary_burning_past_the_rate_is_rolled_back_and_one_below_it_goes_on() -> None:
    spec = gated(windows=[{"long": "1h", "short": "5m", "burnRate": 14.4}])
    failed = step(spec, rolling(spec), at(T0 + MINUTE, measurements=burning(20.0)))
    assert failed.status.phase is RolloutPhase.FAILED and weights(failed) == [0]
    assert 'metric "slo-burn-1h-5m" value 20 outside [-inf, 14.4]' in failed.status.message
    passed = step(spec, rolling(spec), at(T0 + MINUTE, measurements=burning(0.5)))
    assert passed.status.phase is RolloutPhase.PROGRESSING and weights(passed) == [60]


def test_no_data_from_a_burn_query_is_inconclusive_never_a_pass() -> None:
    spec = gated(windows=[{"long": "1h", "short": "5m", "burnRate": 14.4}])
    held = step(spec, rolling(spec), at(T0 + MINUTE, measurements=burning(float("nan"))))
    assert held.status.inconclusive_checks == 1 and weights(held) == []


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"windows": [{"long": "5m", "short": "1h", "burnRate": 2}]}, "shorter than long"),
        ({"windows": [{"long": "1h", "short": "1h", "burnRate": 2}]}, "shorter than long"),
        ({"windows": []}, "at least 1"),
        ({"objective": 1}, "less than 1"),
        ({"objective": 0}, "greater than 0"),
        ({"windows": [{"long": "1h", "short": "5m", "burnRate": 0}]}, "greater than 0"),
    ],
)
def test_bad_slo_fields_are_refused(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        gated(**fields)


def test_a_metric_may_not_take_an_slo_metrics_name() -> None:
    with pytest.raises(ValidationError, match="is the SLO's"):
        Analysis.model_validate(
            {
                "metrics": [{"name": "slo-burn-1h-5m", "query": "q", "thresholdRange": {"max": 1}}],
                "slo": {"objective": 0.999, "errorQuery": ERRORS, "totalQuery": TOTAL},
            }
        )
