"""Strategies: each turns a spec into a plan (`tidegate.plan`) that the engine runs.

A new strategy is a module here with a `plan(spec) -> Plan` function, registered by the
name of its field under `spec.strategy`.
"""

from __future__ import annotations

from collections.abc import Callable

from tidegate.api import RolloutSpec
from tidegate.plan import Plan
from tidegate.strategies import bluegreen, canary

PLANNERS: dict[str, Callable[[RolloutSpec], Plan]] = {
    "canary": canary.plan,
    "blueGreen": bluegreen.plan,
}


def strategy_name(spec: RolloutSpec) -> str:
    """The wire name of the strategy the spec sets (the API allows exactly one)."""
    return "canary" if spec.strategy.canary is not None else "blueGreen"


def plan_for(spec: RolloutSpec) -> Plan:
    return PLANNERS[strategy_name(spec)](spec)
