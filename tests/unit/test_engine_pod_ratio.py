"""trafficRouting.podRatio in the engine: each step's weight is carried by the share of
ready pods, so the copies are sized by it (the canary ceil(weight * N / 100), stable the
rest), the stable copy gives up pods only once the canary's are ready, and every end puts
stable back at full size."""

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as some
from test_engine import (
    MINUTE,
    REPLICAS,
    T0,
    at,
    events,
    initialized,
    make_spec,
    observe,
    passing,
    ready,
    set_weight,
    step,
    weights,
)

from tidegate.analysis import Measurement
from tidegate.api import RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import EnsureWorkload, PointService, ReleaseTarget, ScaleWorkload, Selection
from tidegate.engine.model import pod_split, split_weight
from tidegate.plan import Traffic

assert REPLICAS == 3  # the sizes below are for three pods


def ratio_spec(**overrides: object) -> RolloutSpec:
    return make_spec(
        steps=[{"setWeight": 20}, {"setWeight": 60}],
        trafficRouting={"podRatio": {}},
        **overrides,
    )


def failing() -> tuple[Measurement, ...]:
    return (Measurement(metric="error-rate", value=0.5),)


@pytest.mark.parametrize(
    ("weight", "replicas", "split"),
    [
        (0, 4, (0, 4)),
        (10, 4, (1, 3)),
        (25, 4, (1, 3)),
        (26, 4, (2, 2)),
        (90, 4, (3, 1)),  # a weight below 100 keeps one stable pod
        (100, 4, (4, 1)),  # stable keeps one pod until the promotion
        (100, 1, (1, 1)),
        (1, 10, (1, 9)),
        (50, 1, (1, 1)),  # one pod: one of each
        (20, 3, (1, 2)),
        (60, 3, (2, 1)),
    ],
)
def test_the_split_rounds_the_canary_up(weight: int, replicas: int, split: tuple[int, int]) -> None:
    assert pod_split(weight, replicas) == split


@given(weight=some.integers(0, 100), replicas=some.integers(1, 200))
def test_the_split_is_within_one_pod_of_the_weight(weight: int, replicas: int) -> None:
    canary, stable = pod_split(weight, replicas)
    if (replicas >= 2 and weight < 100) or weight == 0:
        assert canary + stable == replicas
        assert abs(canary - weight * replicas / 100) < 1  # within one pod of the plan
    if weight > 0:
        assert canary >= 1 and stable >= 1  # both versions serve until the promotion
    if weight == 100:
        assert (canary, stable) == (replicas, 1)
    assert 0 <= split_weight(canary, stable) <= 100


def started(spec: RolloutSpec) -> RolloutStatus:
    start = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    # The canary starts at the first step's share, not at full size.
    assert EnsureWorkload(role="canary", revision="v2", replicas=1) in start.actions
    assert weights(start) == [0] and start.status.effective_weight == 0
    return start.status


def first_step_held(spec: RolloutSpec) -> RolloutStatus:
    canary_ready = at(T0, stable=ready("v1"), canary=ready("v2", 1))
    go = step(spec, started(spec), canary_ready)
    held = step(spec, go.status, replace(canary_ready, stable=ready("v1", 2)))
    assert held.status.step_started_at == T0
    return held.status


def test_a_step_sizes_the_copies_by_its_weight_and_says_what_share_they_give() -> None:
    spec = ratio_spec()
    status = started(spec)
    waiting = step(spec, status, at(T0, stable=ready("v1"), canary=ready("v2", 0)))
    assert weights(waiting) == []  # no split before the canary's pod is ready
    go = step(spec, status, at(T0, stable=ready("v1"), canary=ready("v2", 1)))
    # The Service selects both copies; then stable gives up the pod the canary took.
    assert go.actions == (
        set_weight(20),
        EnsureWorkload(role="stable", revision="v1", replicas=2),
    )
    assert (go.status.canary_weight, go.status.effective_weight) == (20, 33)
    assert "setWeight 20: 1 of 3 pods, 33%" in go.status.message
    unapplied = step(
        spec,
        go.status,
        at(T0, stable=ready("v1"), canary=ready("v2", 1), traffic_applied=False),
    )
    assert unapplied.status.step_started_at is None
    assert "the Service's endpoints to hold the planned ready pods for weight 20" in (
        unapplied.status.message
    )

    held = first_step_held(spec)
    # The next step grows the canary first; stable keeps its pods until the canary's are ready.
    grow = step(
        spec,
        held,
        at(T0 + MINUTE, stable=ready("v1", 2), canary=ready("v2", 1), measurements=passing()),
    )
    assert grow.actions == (EnsureWorkload(role="canary", revision="v2", replicas=2),)
    assert weights(grow) == [] and grow.status.canary_weight == 20
    second = step(spec, grow.status, at(T0 + MINUTE, stable=ready("v1", 2), canary=ready("v2", 2)))
    assert second.actions == (
        set_weight(60),
        EnsureWorkload(role="stable", revision="v1", replicas=1),
    )
    assert second.status.effective_weight == 67
    assert "setWeight 60: 2 of 3 pods, 67%" in second.status.message


def test_the_promoted_copy_is_brought_to_full_size_before_the_flip() -> None:
    spec = make_spec(steps=[{"setWeight": 60}], trafficRouting={"podRatio": {}})
    start = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    assert EnsureWorkload(role="canary", revision="v2", replicas=2) in start.actions
    seen = {"stable": ready("v1", 1), "canary": ready("v2", 2)}
    go = step(spec, start.status, at(T0, **seen))
    held = step(spec, go.status, at(T0, **seen))
    selected = Selection(stable="v1", canary="v2")
    promoting = step(
        spec, held.status, at(T0 + MINUTE, measurements=passing(), selected=selected, **seen)
    )
    assert promoting.status.phase is RolloutPhase.PROMOTING
    assert events(promoting) == ["Promoting"]
    assert EnsureWorkload(role="canary", revision="v2", replicas=3) in promoting.actions
    assert not any(isinstance(a, PointService) for a in promoting.actions)
    full = {"stable": ready("v1", 1), "canary": ready("v2", 3)}
    flip = step(spec, promoting.status, at(T0 + MINUTE, selected=selected, **full))
    assert flip.actions == (PointService("stable", "v2"),)
    done = step(
        spec, flip.status, at(T0 + MINUTE, selected=Selection(stable="v2", canary="v2"), **full)
    )
    assert done.status.phase is RolloutPhase.SUCCEEDED
    # The Service selects the promoted copy alone; the copy before goes later.
    assert weights(done) == [0] and done.status.effective_weight == 0
    assert done.status.retiring == ["v1"]
    assert not any(isinstance(a, ScaleWorkload | EnsureWorkload) for a in done.actions)


def test_a_rollback_puts_stable_back_at_full_size_and_keeps_the_canary_until_applied() -> None:
    spec = ratio_spec()
    held = first_step_held(spec)
    seen = {"stable": ready("v1", 2), "canary": ready("v2", 1)}
    once = step(spec, held, at(T0 + MINUTE, measurements=failing(), **seen))
    twice = step(spec, once.status, at(T0 + 2 * MINUTE, measurements=failing(), **seen))
    assert twice.status.phase is RolloutPhase.FAILED and "RolledBack" in events(twice)
    assert twice.actions[0] == set_weight(0)
    assert EnsureWorkload(role="stable", revision="v1", replicas=3) in twice.actions
    assert not any(isinstance(a, ScaleWorkload) for a in twice.actions)
    assert twice.status.effective_weight == 0
    # Not applied yet (stable's pods are not all behind the Service): the canary stays.
    later = step(
        spec,
        twice.status,
        observe(
            "v2",
            now=T0 + 3 * MINUTE,
            traffic=Traffic(),
            traffic_applied=False,
            stable=ready("v1"),
            canary=ready("v2", 1),
        ),
    )
    assert ScaleWorkload(role="canary", replicas=0) not in later.actions


def test_a_copy_that_lost_its_role_goes_before_the_service_selects_every_copy() -> None:
    spec = ratio_spec()
    status = started(spec).model_copy(update={"retiring": ["v0"]})
    blocked = step(
        spec,
        status,
        at(T0, stable=ready("v1"), canary=ready("v2", 1), retiring={"v0": ready("v0")}),
    )
    assert weights(blocked) == [] and blocked.status.canary_weight == 0
    assert "waiting for the copy of v0 to go" in blocked.status.message
    gone = step(
        spec, status, at(T0, stable=ready("v1"), canary=ready("v2", 1), retiring={"v0": None})
    )
    assert weights(gone) == [20]


def test_a_resize_mid_step_resizes_both_copies_to_the_same_share() -> None:
    spec = ratio_spec()
    held = first_step_held(spec)
    bigger = replace(
        at(T0 + timedelta(seconds=10), stable=ready("v1", 2), canary=ready("v2", 1)),
        target_replicas=10,
    )
    resized = step(spec, held, bigger)
    assert EnsureWorkload(role="stable", revision="v1", replicas=8) in resized.actions
    assert EnsureWorkload(role="canary", revision="v2", replicas=2) in resized.actions
    assert resized.status.effective_weight == 20


def test_without_pod_ratio_there_is_no_effective_weight() -> None:
    spec = make_spec()
    status = step(spec, initialized(spec), observe("v2", stable=ready("v1"))).status
    assert status.effective_weight is None
    assert (
        EnsureWorkload(role="canary", revision="v2", replicas=REPLICAS)
        in step(spec, initialized(spec), observe("v2", stable=ready("v1"))).actions
    )


def test_the_stable_service_is_pointed_back_at_a_stable_copy_that_gave_up_pods() -> None:
    spec = ratio_spec()
    held = first_step_held(spec)
    # Someone pointed shop-stable elsewhere mid-step: stable runs 2 of 3 pods, as planned.
    elsewhere = at(
        T0 + timedelta(seconds=10),
        stable=ready("v1", 2),
        canary=ready("v2", 1),
        selected=Selection(stable="v0", canary="v2"),
    )
    assert PointService("stable", "v1") in step(spec, held, elsewhere).actions


def test_a_router_other_than_pod_ratio_clears_the_effective_weight() -> None:
    spec = ratio_spec()
    held = first_step_held(spec)
    assert held.effective_weight == 33
    gateway = make_spec(steps=[{"setWeight": 20}, {"setWeight": 60}])
    after = step(gateway, held, at(T0 + timedelta(seconds=10)))
    assert after.status.effective_weight is None


def test_the_service_selects_every_copy_only_once_the_users_deployment_runs_no_pod() -> None:
    """Adoption leaves the user's Deployment running for the scale-down delay, and a new
    version is written into it: the Service must not select its pods with the copies'."""
    spec = ratio_spec()
    status = started(spec)
    blocked = step(
        spec, status, at(T0, stable=ready("v1"), canary=ready("v2", 1), target_running=True)
    )
    assert weights(blocked) == [] and blocked.status.canary_weight == 0
    assert "waiting for the pods of Deployment app to go" in blocked.status.message
    gone = step(spec, status, at(T0, stable=ready("v1"), canary=ready("v2", 1)))
    assert weights(gone) == [20]


def test_a_resize_of_the_users_deployment_mid_step_is_scaled_back_under_the_wide_selector() -> None:
    spec = ratio_spec()
    held = first_step_held(spec)
    resized = at(
        T0 + timedelta(seconds=10),
        stable=ready("v1", 2),
        canary=ready("v2", 1),
        target_running=True,
        service_isolated=False,
    )
    first = step(spec, held, resized)
    assert first.status.target_scale_down_at is not None  # the delay runs though not isolated
    later = replace(resized, now=first.status.target_scale_down_at)
    assert ReleaseTarget() in step(spec, first.status, later).actions
