"""Random canaries with trafficRouting.podRatio, run against the fake cluster of
test_engine_properties: the copies' sizes always carry the weight the routes are told, and
stable gives up pods only to a canary whose pods are ready."""

from dataclasses import dataclass, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine_properties import (
    World,
    answers,
    assert_no_request_meets_an_empty_copy,
    events,
    measurement,
    stored,
)

from tidegate.api import RolloutPhase, RolloutSpec, RolloutStatus, WebhookType
from tidegate.engine import (
    EnsureWorkload,
    Observation,
    ScaleWorkload,
    SetTraffic,
    needs_measurement,
    reconcile,
)
from tidegate.engine.model import pod_split, split_weight
from tidegate.plan import STABLE_ONLY

RUNNING = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)

ratio_steps = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.just({"pause": {}}),
    st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(0, 300)),
    st.builds(lambda n: {"analysis": {"iterations": n}}, st.integers(1, 3)),
)


@st.composite
def ratio_specs(draw: st.DrawFn) -> RolloutSpec:
    steps = draw(st.lists(ratio_steps, min_size=1, max_size=5))
    weights = iter(sorted(s["setWeight"] for s in steps if "setWeight" in s))
    steps = [{"setWeight": next(weights)} if "setWeight" in s else s for s in steps]
    metrics = [
        {"name": f"m{i}", "query": "q", "thresholdRange": {"min": 0, "max": 1}}
        for i in range(draw(st.integers(0, 2)))
    ]
    hook_types = draw(st.lists(st.sampled_from(list(WebhookType)), unique=True, max_size=3))
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "app"},
            "service": {"name": "app", "port": 80},
            "strategy": {"canary": {"steps": steps}},
            "trafficRouting": {"podRatio": {}},
            "analysis": {
                "interval": f"{draw(st.integers(1, 120))}s",
                "failureLimit": draw(st.integers(1, 3)),
                "metrics": metrics,
            },
            "progressDeadlineSeconds": draw(st.integers(1, 600)),
            "webhooks": [
                {"name": f"h-{t.value}", "type": t.value, "url": f"http://hooks/{t.value}"}
                for t in hook_types
            ],
        }
    )


@dataclass
class SizedWorld(World):
    """The fake cluster, with a target of `replicas` pods."""

    replicas: int = 2

    def observe(self, *args: Any, **kwargs: Any) -> Observation:
        return replace(super().observe(*args, **kwargs), target_replicas=self.replicas)


@settings(max_examples=200, deadline=None)
@given(
    spec=ratio_specs(),
    replicas=st.integers(1, 7),
    script=st.lists(events, min_size=10, max_size=120),
    first_answers=st.dictionaries(st.sampled_from(list(WebhookType)), answers),
)
def test_the_copies_always_carry_the_weight_the_routes_are_told(
    spec: RolloutSpec,
    replicas: int,
    script: list[tuple[str, Any]],
    first_answers: dict[WebhookType, Any],
) -> None:
    world = SizedWorld(replicas=replicas)
    world.answers.update(first_answers)
    status = RolloutStatus()
    prefix: list[tuple[str, Any]] = [("settle", None)] * 3 + [("revision", "v2")]
    for kind, arg in prefix + script:
        world.happen(kind, arg)
        measurements = None
        if kind == "measure" and needs_measurement(spec, status, world.now):
            measurements = tuple(
                measurement(m.name, outcome)
                for m, outcome in zip(spec.analysis.metrics, arg, strict=False)
            )
        observed = world.observe(measurements, world.call(spec, status))
        decision = reconcile(spec, stored(status), observed)
        world.apply(decision)
        before, status = status, decision.status
        assert stored(status) == status
        assert_no_request_meets_an_empty_copy(world)
        # The status says the share the pods give, whenever it names a weight.
        if status.phase is not RolloutPhase.INITIALIZING:
            canary_pods, stable_pods = pod_split(status.canary_weight, replicas)
            assert status.effective_weight == split_weight(canary_pods, stable_pods)
        for action in decision.actions:
            split = isinstance(action, SetTraffic) and action.traffic.canary_weight > 0
            if split and not action.restore:  # type: ignore[union-attr]
                # A split reaches the Service only once the canary's pods for it are ready.
                seen = observed.canary
                needed = pod_split(action.traffic.canary_weight, replicas)[0]  # type: ignore[union-attr]
                assert seen is not None and seen.ready and seen.replicas >= needed
                assert seen.revision == status.canary_revision
            if isinstance(action, EnsureWorkload) and action.role == "stable":
                if action.replicas < replicas:
                    # Stable shrinks only for the weight the routes are told, in a canary
                    # under way, and only as far as the split says.
                    assert status.phase in RUNNING and status.canary_weight > 0
                    assert action.replicas == pod_split(status.canary_weight, replicas)[1]
                    seen = observed.canary
                    assert seen is not None and seen.ready
                    assert seen.replicas >= pod_split(status.canary_weight, replicas)[0]
                else:
                    assert action.replicas == replicas
            if isinstance(action, ScaleWorkload) and action.role == "canary":
                # The canary is scaled away only once all traffic is seen on stable.
                assert action.replicas > 0 or (
                    observed.traffic == STABLE_ONLY and observed.traffic_applied
                )
        if status.phase in (RolloutPhase.FAILED, RolloutPhase.ABORTED) and before.phase in RUNNING:
            # A rollback puts stable back at full size in the same decision.
            stable = observed.stable
            if stable is None or stable.replicas != replicas:
                assert any(
                    isinstance(a, EnsureWorkload) and a.role == "stable" and a.replicas == replicas
                    for a in decision.actions
                )
