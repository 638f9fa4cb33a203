"""Random specs and observation sequences; invariants that must hold on every Decision."""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from tidegate.api import RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import (
    STEADY_PHASES,
    ClearPromoteRequest,
    Decision,
    EnsureWorkload,
    Measurement,
    Observation,
    ScaleWorkload,
    SetCanaryWeight,
    WorkloadState,
    expand_steps,
    needs_measurement,
    reconcile,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
REPLICAS = 2
REVISIONS = ("v1", "v2", "v3")

step_dicts = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.just({"pause": {}}),
    st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(0, 300)),
    st.builds(lambda n: {"analysis": {"iterations": n}}, st.integers(1, 3)),
)


@st.composite
def canary_strategies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        step_weight = draw(st.integers(25, 100))  # few steps, so rollouts can finish
        return {"stepWeight": step_weight, "maxWeight": draw(st.integers(step_weight, 100))}
    steps = draw(st.lists(step_dicts, min_size=1, max_size=4))
    weights = iter(sorted(s["setWeight"] for s in steps if "setWeight" in s))
    return {"steps": [{"setWeight": next(weights)} if "setWeight" in s else s for s in steps]}


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    metric_count = draw(st.integers(0, 2))
    metrics = [
        {"name": f"m{i}", "query": "q", "thresholdRange": {"min": 0, "max": 1}}
        for i in range(metric_count)
    ]
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "app"},
            "service": {"name": "app", "port": 80},
            "strategy": {"canary": draw(canary_strategies())},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
            "analysis": {
                "interval": f"{draw(st.integers(1, 120))}s",
                "failureLimit": draw(st.integers(1, 3)),
                "metrics": metrics,
            },
            "progressDeadlineSeconds": draw(st.integers(1, 600)),
            "skipAnalysis": draw(st.booleans()),
        }
    )


# A measured value per metric: in range (mostly), out of range, no data, or a query error.
outcomes = st.sampled_from(["pass"] * 8 + ["fail", "none", "error"])

# Weighted by repetition: rollouts need many ticks, settles and measurements to get anywhere.
events = st.one_of(
    *[st.tuples(st.just("tick"), st.integers(0, 400))] * 6,
    *[st.tuples(st.just("settle"), st.just(None))] * 3,
    *[st.tuples(st.just("measure"), st.lists(outcomes, min_size=2, max_size=2))] * 6,
    st.tuples(st.just("unready"), st.sampled_from(["stable", "canary"])),
    st.tuples(st.just("revision"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("promote"), st.just(None)),
    st.tuples(st.just("toggle-pause"), st.just(None)),
)


def measurement(metric: str, outcome: str) -> Measurement:
    values = {"pass": 0.5, "fail": 7.0, "none": None, "error": None}
    return Measurement(metric, values[outcome], "boom" if outcome == "error" else None)


@dataclass
class World:
    """A fake cluster that applies the engine's actions."""

    now: datetime = T0
    target: str = "v1"
    workloads: dict[str, WorkloadState | None] = field(
        default_factory=lambda: {"stable": None, "canary": None}
    )
    weight: int = 0
    promote_requested: bool = False

    def observe(self, measurements: tuple[Measurement, ...] | None = None) -> Observation:
        return Observation(
            now=self.now,
            generation=1,
            target_revision=self.target,
            target_replicas=REPLICAS,
            stable=self.workloads["stable"],
            canary=self.workloads["canary"],
            promote_requested=self.promote_requested,
            measurements=measurements,
        )

    def happen(self, kind: str, arg: Any) -> None:
        """What the cluster or a user does between reconciles."""
        if kind == "tick":
            self.now += timedelta(seconds=arg)
        elif kind == "settle":
            for role, current in self.workloads.items():
                if current is not None:
                    self.workloads[role] = replace(current, ready=True)
        elif kind == "unready":
            current = self.workloads[arg]
            if current is not None:
                self.workloads[arg] = replace(current, ready=False)
        elif kind == "revision":
            self.target = arg
        elif kind == "promote":
            self.promote_requested = True

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, SetCanaryWeight):
                self.weight = action.weight
            elif isinstance(action, EnsureWorkload):
                current = self.workloads[action.role]
                wanted = (action.revision, action.replicas)
                if current is None or (current.revision, current.replicas) != wanted:
                    self.workloads[action.role] = WorkloadState(*wanted, ready=False)
            elif isinstance(action, ScaleWorkload):
                current = self.workloads[action.role]
                if current is not None:
                    self.workloads[action.role] = replace(current, replicas=action.replicas)
            elif isinstance(action, ClearPromoteRequest):
                self.promote_requested = False


def stored(status: RolloutStatus) -> RolloutStatus:
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return RolloutStatus.model_validate(wire)


def required_passes(spec: RolloutSpec) -> dict[int, int]:
    """Passing measurement sets each analysed step needs before the rollout may move on."""
    if spec.skip_analysis or not spec.analysis.metrics:
        return {}
    needed: dict[int, int] = {}
    for index, step in enumerate(expand_steps(spec.strategy.canary)):
        if step.set_weight is not None:
            needed[index] = 1
        elif step.analysis is not None:
            needed[index] = step.analysis.iterations
    return needed


def assert_idle_is_quiet(spec: RolloutSpec, status: RolloutStatus, world: World) -> None:
    stable = world.workloads["stable"]
    if (
        status.phase in STEADY_PHASES
        and world.target == status.stable_revision
        and stable is not None
        and stable.ready
        and (stable.revision, stable.replicas) == (status.stable_revision, REPLICAS)
    ):
        again = reconcile(spec, stored(status), world.observe())
        assert again.actions == ()
        assert again.status == status
        assert again.requeue_after is None


@settings(max_examples=400, deadline=None)
@given(base_spec=specs(), script=st.lists(events, min_size=10, max_size=120))
def test_invariants_hold_on_every_decision(
    base_spec: RolloutSpec, script: list[tuple[str, Any]]
) -> None:
    paused_spec = base_spec.model_copy(update={"paused": True})
    paused = False
    world = World()
    status = RolloutStatus()
    needed = required_passes(base_spec)
    passes: dict[int, int] = {}
    rollout_key: tuple[object, ...] | None = None

    # Most scripts should exercise a rollout: start from v1 and ask for v2 right away.
    prefix: list[tuple[str, Any]] = [("settle", None), ("settle", None), ("revision", "v2")]
    for kind, arg in prefix + script:
        spec = paused_spec if paused else base_spec
        measurements: tuple[Measurement, ...] | None = None
        world.happen(kind, arg)
        if kind == "toggle-pause":
            paused = not paused
            spec = paused_spec if paused else base_spec
        elif kind == "measure" and needs_measurement(spec, status, world.now):
            measurements = tuple(
                measurement(m.name, outcome)
                for m, outcome in zip(spec.analysis.metrics, arg, strict=False)
            )

        key = (status.canary_revision, status.rollout_started_at)
        if key != rollout_key:
            rollout_key, passes = key, {}
        canary = world.workloads["canary"]
        canary_ready = (
            canary is not None and canary.ready and canary.revision == status.canary_revision
        )
        used_outcomes = arg[: len(spec.analysis.metrics)] if kind == "measure" else []
        if measurements is not None and canary_ready and all(o == "pass" for o in used_outcomes):
            index = status.current_step_index or 0
            passes[index] = passes.get(index, 0) + 1

        before = status.phase
        decision = reconcile(spec, stored(status), world.observe(measurements))
        world.apply(decision)
        status = decision.status

        assert stored(status) == status
        assert 0 <= status.canary_weight <= 100
        assert all(0 <= w <= 100 for w in (world.weight,))
        for action in decision.actions:
            if isinstance(action, SetCanaryWeight):
                assert 0 <= action.weight <= 100
        if status.phase is RolloutPhase.FAILED:
            assert world.weight == 0
            assert status.canary_weight == 0
        if status.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED) and before in (
            RolloutPhase.PROGRESSING,
            RolloutPhase.PAUSED,
        ):
            for index, count in needed.items():
                assert passes.get(index, 0) >= count, (
                    f"promoted without {count} passing measurement(s) at step {index}"
                )
        if status.phase is RolloutPhase.SUCCEEDED:
            assert world.weight == 0
        assert_idle_is_quiet(spec, status, world)
        if status.phase is not before:
            event(f"reached {status.phase}")


bad_outcomes = st.sampled_from(["fail", "none", "error"])
bad_events = st.one_of(
    *[st.tuples(st.just("tick"), st.integers(0, 400))] * 3,
    *[st.tuples(st.just("measure"), st.lists(bad_outcomes, min_size=2, max_size=2))] * 3,
    st.tuples(st.just("settle"), st.just(None)),
    st.tuples(st.just("promote"), st.just(None)),
)


@settings(max_examples=200, deadline=None)
@given(spec=specs(), script=st.lists(bad_events, min_size=5, max_size=60))
def test_never_advances_past_an_analysed_step_without_passing_data(
    spec: RolloutSpec, script: list[tuple[str, Any]]
) -> None:
    analysed = sorted(required_passes(spec))
    world = World()
    status = RolloutStatus()
    for kind, arg in [("settle", None), ("settle", None), ("revision", "v2"), *script]:
        measurements: tuple[Measurement, ...] | None = None
        world.happen(kind, arg)
        if kind == "measure" and needs_measurement(spec, status, world.now):
            measurements = tuple(
                measurement(m.name, o) for m, o in zip(spec.analysis.metrics, arg, strict=False)
            )
        decision = reconcile(spec, stored(status), world.observe(measurements))
        world.apply(decision)
        status = decision.status
        if analysed and status.canary_revision == "v2":
            assert (status.current_step_index or 0) <= analysed[0]
            assert status.phase not in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)
