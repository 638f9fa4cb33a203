"""What the strategies share."""

from __future__ import annotations

from tidegate.api import HeaderRouteMatch, RolloutSpec, WebhookType
from tidegate.plan import HeaderMatch
from tidegate.slo import checked_metrics


def analysis_enabled(spec: RolloutSpec) -> bool:
    """Whether analysis steps measure: there is something to check (a metric or a rollout
    webhook) and analysis is not skipped."""
    checks = bool(checked_metrics(spec.analysis)) or bool(spec.webhooks_of(WebhookType.ROLLOUT))
    return not spec.skip_analysis and checks


def header_match(match: HeaderRouteMatch) -> HeaderMatch:
    value = match.header_value
    if value.regex is not None:
        return HeaderMatch(match.header_name, value.regex, regex=True)
    return HeaderMatch(match.header_name, value.exact or "")


def has_preview_route(spec: RolloutSpec) -> bool:
    return spec.traffic_routing.preview_field is not None
