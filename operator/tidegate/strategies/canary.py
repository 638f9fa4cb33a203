"""The canary strategy: one plan step per spec step, the traffic accumulating as they go."""

from __future__ import annotations

from dataclasses import replace

from tidegate.api import CanaryStrategy, RolloutSpec, Step
from tidegate.durations import format_duration, parse_duration
from tidegate.plan import Analyse, AwaitPromotion, Hold, Plan, PlanStep, Traffic, Wait
from tidegate.strategies.common import analysis_enabled, has_preview_route, header_match


def expand_steps(canary: CanaryStrategy) -> list[Step]:
    """The explicit steps, or setWeight steps stepWeight, 2*stepWeight, ... up to maxWeight."""
    if canary.steps is not None:
        return list(canary.steps)
    if canary.step_weight is None or canary.max_weight is None:
        return []
    weights = [*range(canary.step_weight, canary.max_weight, canary.step_weight)]
    weights.append(canary.max_weight)
    return [Step(set_weight=weight) for weight in weights]


def plan(spec: RolloutSpec) -> Plan:
    strategy = spec.strategy.canary
    assert strategy is not None
    analysed = analysis_enabled(spec)
    interval = parse_duration(spec.analysis.interval)
    # While a canary runs, the preview route (if any) shows it too.
    traffic = Traffic(preview=has_preview_route(spec))
    steps: list[PlanStep] = []
    needs: dict[str, str] = {"weights": "spec.strategy.canary"}
    for index, step in enumerate(expand_steps(strategy)):
        where = f"spec.strategy.canary.steps[{index}]"
        wait: Wait | None = None
        if step.set_weight is not None:
            traffic = replace(traffic, canary_weight=step.set_weight)
            name = f"setWeight {step.set_weight}"
            # Without analysis a weight is still held for one interval before the next.
            wait = Analyse(1) if analysed else Hold(interval, "HoldingWeight")
        elif step.pause is not None:
            if step.pause.duration is None:
                name, wait = "pause", AwaitPromotion()
            else:
                duration = parse_duration(step.pause.duration)
                name, wait = f"pause {format_duration(duration)}", Hold(duration, "Pausing")
        elif step.analysis is not None:
            name = f"analysis x{step.analysis.iterations}"
            wait = Analyse(step.analysis.iterations) if analysed else None
        elif step.set_header_route is not None:
            matches = tuple(header_match(m) for m in step.set_header_route.match or ())
            traffic = replace(traffic, header_route=matches)
            name = "setHeaderRoute" if matches else "setHeaderRoute (removed)"
            needs.setdefault("header", f"{where}.setHeaderRoute")
        else:
            assert step.set_mirror_route is not None
            percent = step.set_mirror_route.percentage or 0
            traffic = replace(traffic, mirror_percent=percent)
            name = f"setMirrorRoute {percent}%"
            needs.setdefault("mirror", f"{where}.setMirrorRoute")
        steps.append(PlanStep(name=name, traffic=traffic, wait=wait))
    if spec.traffic_routing.preview_field is not None:
        needs["preview"] = spec.traffic_routing.preview_field
    return Plan(steps=tuple(steps), needs=needs)
