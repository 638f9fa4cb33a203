"""Error-budget burn-rate gates (spec.analysis.slo) as metrics the analysis already judges.

Each window pair becomes one metric, `slo-burn-<long>-<short>`, whose query gives the lower
of the two burn rates: the error ratio over the window divided by the budget (1 -
objective). Its range is [-inf, burnRate], so it fails only when the budget burns too fast
over both windows, which is the multi-window rule: the long window shows the burn is
sustained, the short one that it is still going on. Pure: queries are built, not sent.
"""

from __future__ import annotations

import re

from tidegate import api
from tidegate.durations import parse_duration

_WINDOW = re.compile(r"\{\{\s*window\s*\}\}")


def _over(query: str, window: str) -> str:
    """`query` with `{{ window }}` as that window, in seconds (PromQL's plainest form); the
    other variables are left for the reconciler to fill in."""
    seconds = round(parse_duration(window).total_seconds())
    return _WINDOW.sub(f"{max(seconds, 1)}s", query)


def _ratio(slo: api.Slo, window: str, label: str) -> str:
    errors, total = _over(slo.error_query, window), _over(slo.total_query, window)
    # One unlabelled series whatever the queries' labels; NaN when there is nothing to judge.
    return f'label_replace(vector(scalar(({errors}) / ({total}))), "window", "{label}", "", "")'


def burn_query(slo: api.Slo, window: api.BurnWindow) -> str:
    """The lower of the long and short windows' burn rates, as one series. (Prometheus's
    min passes over a NaN beside a number, and gives NaN, no data, when both are.)"""
    budget = 1 - slo.objective
    long, short = _ratio(slo, window.long, "long"), _ratio(slo, window.short, "short")
    return f"min(\n  {long}\n  or\n  {short}\n) / {budget:.12g}"


def burn_metrics(slo: api.Slo | None) -> list[api.Metric]:
    """The metric each of the SLO's window pairs is measured and judged as."""
    if slo is None:
        return []
    return [
        api.Metric(
            name=api.burn_metric_name(window),
            query=burn_query(slo, window),
            threshold_range=api.ThresholdRange(max=window.burn_rate),
        )
        for window in slo.windows
    ]


def checked_metrics(analysis: api.Analysis) -> list[api.Metric]:
    """Everything a measurement queries and judges: the metrics, then the SLO's."""
    return [*analysis.metrics, *burn_metrics(analysis.slo)]
