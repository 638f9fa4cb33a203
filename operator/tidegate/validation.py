"""What is wrong with a ProgressiveRollout's spec, each problem at its field path.

One place for the rules the operator applies before acting and `kubectl tidegate lint`
applies offline: the pydantic models (which are also the CRD's schema), then what the chosen
router can carry. The router's capabilities are passed in, so this module stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tidegate import api
from tidegate.strategies import plan_for
from tidegate.templates import ARGS_PREFIX, placeholders


@dataclass(frozen=True)
class Problem:
    path: str  # spec.strategy.canary.steps[0].setWeight
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def spec_problems(
    spec: Mapping[str, Any] | None,
    capabilities: Callable[[api.RolloutSpec], frozenset[str]],
) -> tuple[api.RolloutSpec | None, list[Problem]]:
    """The parsed spec (None when it does not parse) and every problem found in it.
    `capabilities(spec)` says what the router the spec names (under spec.trafficRouting)
    can carry."""
    try:
        parsed = api.RolloutSpec.model_validate(spec or {})
    except ValidationError as error:
        return None, [
            Problem(field_path("spec", tuple(e["loc"])), e["msg"]) for e in error.errors()
        ]
    can = capabilities(parsed)
    router = f"spec.trafficRouting.{parsed.traffic_routing.router}"
    return parsed, [
        Problem(field, f"the router {router} cannot carry {need!r} routes")
        for need, field in plan_for(parsed).needs.items()
        if need not in can
    ] + _pod_ratio_problems(parsed) + _argument_problems(parsed)


def _pod_ratio_problems(spec: api.RolloutSpec) -> list[Problem]:
    """With trafficRouting.podRatio the step's weight sets each copy's size, which an
    autoscaler would change under it."""
    if spec.traffic_routing.pod_ratio is None or spec.autoscaler_ref is None:
        return []
    return [
        Problem(
            "spec.autoscalerRef",
            "spec.trafficRouting.podRatio sizes the copies by the step's weight; "
            "it cannot be used with an autoscaler",
        )
    ]


def _unknown_variables(text: str, allowed: frozenset[str]) -> list[str]:
    return [f"{{{{ {name} }}}}" for name in placeholders(text) if name not in allowed]


_VARIABLES = frozenset(api.QUERY_VARIABLES)


def _argument_problems(spec: api.RolloutSpec) -> list[Problem]:
    """A template argument's value may use the rollout's variables, and nothing else. (What
    the template itself asks for is known only with the template: the operator checks it
    when it resolves the metric.)"""
    problems = []
    for m, metric in enumerate(spec.analysis.metrics):
        for a, arg in enumerate(metric.args or ()):
            for unknown in _unknown_variables(arg.value, _VARIABLES):
                problems.append(
                    Problem(
                        f"spec.analysis.metrics[{m}].args[{a}].value",
                        f"unknown variable {unknown}; known: {', '.join(sorted(_VARIABLES))}",
                    )
                )
    return problems


def template_problems(spec: Mapping[str, Any] | None) -> list[Problem]:
    """Every problem of a MetricTemplate's or ClusterMetricTemplate's spec: the model, then
    the query's placeholders (an argument it declares, or a rollout variable) and the
    defaults' (rollout variables only)."""
    try:
        parsed = api.MetricTemplateSpec.model_validate(spec or {})
    except ValidationError as error:
        return [Problem(field_path("spec", tuple(e["loc"])), e["msg"]) for e in error.errors()]
    declared = frozenset(ARGS_PREFIX + arg.name for arg in parsed.args)
    problems = [
        Problem("spec.query", f"unknown variable {unknown}: not a rollout variable nor in args")
        for unknown in _unknown_variables(parsed.query, _VARIABLES | declared)
    ]
    for index, arg in enumerate(parsed.args):
        for unknown in _unknown_variables(arg.value or "", _VARIABLES):
            problems.append(Problem(f"spec.args[{index}].value", f"unknown variable {unknown}"))
    return problems
