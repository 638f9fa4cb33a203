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
    ]
