"""The blue/green strategy.

Green (the new version) starts beside blue with no live traffic, shown on the preview route
if there is one, and is analysed there; after promotion (automatic, timed or by hand) it is
brought to full size, takes all live traffic in one switch, is analysed again, and blue is
kept up for `scaleDownDelaySeconds` in case the switch has to be undone.
"""

from __future__ import annotations

from datetime import timedelta

from tidegate.api import RolloutSpec
from tidegate.plan import Analyse, AwaitPromotion, Hold, Plan, PlanStep, Traffic
from tidegate.strategies.common import analysis_enabled, has_preview_route

PREVIEW = "Preview"
SWITCHED = "Switched"
SCALING_DOWN = "ScalingDown"


def plan(spec: RolloutSpec) -> Plan:
    strategy = spec.strategy.blue_green
    assert strategy is not None
    analysed = analysis_enabled(spec)
    preview = has_preview_route(spec)
    previewing = Traffic(preview=preview)
    switched = Traffic(canary_weight=100, preview=preview)
    pre, post = strategy.pre_promotion_analysis, strategy.post_promotion_analysis

    steps = [
        PlanStep(
            name=PREVIEW,
            traffic=previewing,
            canary_replicas=strategy.preview_replica_count,
            wait=Analyse(pre.iterations) if pre is not None and analysed else None,
        )
    ]
    if not strategy.auto_promotion_enabled:
        steps.append(
            PlanStep(PREVIEW, previewing, strategy.preview_replica_count, AwaitPromotion())
        )
    elif strategy.auto_promotion_seconds is not None:
        timeout = timedelta(seconds=strategy.auto_promotion_seconds)
        steps.append(
            PlanStep(PREVIEW, previewing, strategy.preview_replica_count, AwaitPromotion(timeout))
        )
    # Full size (canary_replicas None) before any live traffic arrives: a step routes its
    # traffic only once the new version's pods are ready.
    steps.append(
        PlanStep(
            name=SWITCHED,
            traffic=switched,
            canary_replicas=None,
            wait=Analyse(post.iterations) if post is not None and analysed else None,
        )
    )
    delay = timedelta(seconds=strategy.scale_down_delay_seconds)
    steps.append(PlanStep(SCALING_DOWN, switched, None, Hold(delay, SCALING_DOWN)))

    # All or nothing: any router that can switch the live traffic at once will do.
    needs = {"switch": "spec.strategy.blueGreen"}
    if spec.traffic_routing.preview_field is not None:
        needs["preview"] = spec.traffic_routing.preview_field
    return Plan(steps=tuple(steps), needs=needs)
