from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.analysis import Measurement
from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    CanaryStrategy,
    OnInconclusive,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
)
from tidegate.engine import (
    ClearRequest,
    Decision,
    EmitEvent,
    EnsureWorkload,
    Observation,
    PointService,
    ReleaseTarget,
    RemoveCopy,
    ScaleWorkload,
    Selection,
    SetTraffic,
    WorkloadState,
    needs_measurement,
    reconcile,
    status_traffic,
)
from tidegate.plan import Traffic
from tidegate.strategies.canary import expand_steps

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
REPLICAS = 3


def make_spec(
    steps: list[dict[str, Any]] | None = None,
    metrics: bool = True,
    **overrides: Any,
) -> RolloutSpec:
    data: dict[str, Any] = {
        "targetRef": {"name": "app"},
        "service": {"name": "app", "port": 80},
        "strategy": {"canary": {"steps": steps or [{"setWeight": 20}, {"setWeight": 60}]}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
        "analysis": {
            "interval": "1m",
            "failureLimit": 2,
            "metrics": [
                {"name": "error-rate", "query": "q", "thresholdRange": {"min": 0, "max": 0.05}}
            ]
            if metrics
            else [],
        },
    }
    data.update(overrides)
    return RolloutSpec.model_validate(data)


def ready(revision: str, replicas: int = REPLICAS) -> WorkloadState:
    return WorkloadState(revision=revision, replicas=replicas, ready=True)


def starting(revision: str, replicas: int = REPLICAS) -> WorkloadState:
    return WorkloadState(revision=revision, replicas=replicas, ready=False)


def observe(
    target: str = "v1",
    *,
    now: datetime = T0,
    stable: WorkloadState | None = None,
    canary: WorkloadState | None = None,
    **extra: Any,
) -> Observation:
    return Observation(
        now=now,
        generation=1,
        target_revision=target,
        target_replicas=REPLICAS,
        stable=stable,
        canary=canary,
        **extra,
    )


def passing(value: float = 0.01) -> tuple[Measurement, ...]:
    return (Measurement(metric="error-rate", value=value),)


def stored(status: RolloutStatus) -> RolloutStatus:
    """What the operator reads back after writing the status."""
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return RolloutStatus.model_validate(wire)


def step(spec: RolloutSpec, status: RolloutStatus, obs: Observation) -> Decision:
    """One reconcile. Unless the test says what the routes hold, they hold what `status`
    says: the previous decision's actions were carried out."""
    if obs.traffic is None:
        obs = replace(obs, traffic=status_traffic(status))
    decision = reconcile(spec, stored(status), obs)
    assert stored(decision.status) == decision.status
    return decision


def set_weight(weight: int) -> SetTraffic:
    return SetTraffic(Traffic(canary_weight=weight))


def weights(decision: Decision) -> list[int]:
    return [a.traffic.canary_weight for a in decision.actions if isinstance(a, SetTraffic)]


def events(decision: Decision) -> list[str]:
    return [a.reason for a in decision.actions if isinstance(a, EmitEvent)]


def condition(status: RolloutStatus, type_: str) -> str:
    found = status.condition(type_)
    assert found is not None
    return found.status


def initialized(spec: RolloutSpec) -> RolloutStatus:
    first = step(spec, RolloutStatus(), observe("v1"))
    return step(spec, first.status, observe("v1", stable=ready("v1"))).status


def rolling(spec: RolloutSpec, now: datetime = T0) -> RolloutStatus:
    """A rollout of v2 whose canary is ready and whose first step has just started."""
    started = step(spec, initialized(spec), observe("v2", now=now, stable=ready("v1")))
    ready_canary = observe("v2", now=now, stable=ready("v1"), canary=ready("v2"))
    routed = step(spec, started.status, ready_canary)
    # The step starts once the route is seen holding its weight.
    return step(spec, routed.status, ready_canary).status


def at(now: datetime, target: str = "v2", **extra: Any) -> Observation:
    copies = {"stable": ready("v1"), "canary": ready(target), **extra}
    return observe(target, now=now, **copies)


# --- expand_steps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step_weight", "max_weight", "expected"),
    [
        (20, 50, [20, 40, 50]),
        (10, 30, [10, 20, 30]),
        (50, 50, [50]),
        (30, 100, [30, 60, 90, 100]),
        (1, 3, [1, 2, 3]),
    ],
)
def test_expand_shorthand(step_weight: int, max_weight: int, expected: list[int]) -> None:
    canary = CanaryStrategy(step_weight=step_weight, max_weight=max_weight)
    assert [s.set_weight for s in expand_steps(canary)] == expected


def test_expand_explicit_steps_unchanged() -> None:
    spec = make_spec(steps=[{"setWeight": 5}, {"pause": {}}])
    assert expand_steps(spec.strategy.canary) == spec.strategy.canary.steps


# --- initialisation and steady state --------------------------------------------------------


def test_brand_new_adopts_the_target_as_stable() -> None:
    spec = make_spec()
    first = step(spec, RolloutStatus(), observe("v1"))
    assert first.actions == (EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS),)
    assert first.status.phase is RolloutPhase.INITIALIZING
    assert first.status.stable_revision == "v1"
    assert first.requeue_after is None  # woken when the stable copy becomes ready
    assert condition(first.status, "Progressing") == "True"

    waiting = step(spec, first.status, observe("v1", stable=starting("v1")))
    assert waiting.actions == ()
    assert waiting.status.phase is RolloutPhase.INITIALIZING

    done = step(spec, waiting.status, observe("v1", stable=ready("v1")))
    assert done.actions[0] == set_weight(0)
    assert done.status.phase is RolloutPhase.INITIALIZED
    assert condition(done.status, "Ready") == "True"
    assert condition(done.status, "Progressing") == "False"
    assert done.requeue_after is None


def test_initializing_follows_a_changed_template() -> None:
    spec = make_spec()
    first = step(spec, RolloutStatus(), observe("v1"))
    again = step(spec, first.status, observe("v2", stable=starting("v1")))
    assert EnsureWorkload(role="stable", revision="v2", replicas=REPLICAS) in again.actions
    assert again.status.stable_revision == "v2"


@pytest.mark.parametrize("phase", ["Initialized", "Succeeded", "Failed", "Cancelled"])
def test_idle_steady_phase_changes_nothing(phase: str) -> None:
    spec = make_spec()
    status = initialized(spec).model_copy(update={"phase": RolloutPhase(phase)})
    status = step(spec, status, observe("v1", stable=ready("v1"))).status
    decision = step(spec, status, observe("v1", stable=ready("v1"), now=T0 + 5 * MINUTE))
    assert decision.actions == ()
    assert decision.status == status
    assert decision.requeue_after is None


@pytest.mark.parametrize(
    "stable",
    [None, ready("v0"), ready("v1", replicas=1), WorkloadState(None, REPLICAS, True)],
    ids=["missing", "wrong-revision", "wrong-replicas", "unknown-revision"],
)
def test_steady_self_heals_drift(stable: WorkloadState | None) -> None:
    spec = make_spec()
    status = initialized(spec)
    decision = step(spec, status, observe("v1", stable=stable))
    assert decision.actions == (EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS),)
    assert decision.status.phase is RolloutPhase.INITIALIZED


def test_steady_scales_a_canary_left_running_back_to_zero_once_the_delay_has_passed() -> None:
    spec = make_spec()
    status = initialized(spec)
    left = observe("v1", stable=ready("v1"), canary=ready("v2"))
    seen = step(spec, status, left)
    assert seen.actions == ()
    assert seen.status.canary_scale_down_at == T0 + timedelta(seconds=30)
    assert seen.requeue_after == 30
    early = step(spec, seen.status, replace(left, now=T0 + timedelta(seconds=29)))
    assert early.actions == ()
    due = step(spec, early.status, replace(left, now=T0 + timedelta(seconds=30)))
    assert due.actions == (ScaleWorkload(role="canary", replicas=0),)
    assert due.status.canary_scale_down_at is None
    scaled = observe("v1", stable=ready("v1"), canary=ready("v2", replicas=0))
    assert step(spec, due.status, scaled).actions == ()


def test_a_canary_is_not_scaled_down_while_the_gateway_has_not_applied_the_route() -> None:
    spec = make_spec()
    status = initialized(spec)
    pending = observe("v1", stable=ready("v1"), canary=ready("v2"), traffic_applied=False)
    for minutes in (0, 5, 60):
        decision = step(spec, status, replace(pending, now=T0 + minutes * MINUTE))
        assert decision.actions == ()
        assert decision.status.canary_scale_down_at is None
    # Drifted back to the canary: the wait starts again once stable holds everything again.
    drifted = observe("v1", stable=ready("v1"), canary=ready("v2"), traffic=Traffic(30))
    seen = step(spec, status, replace(drifted, now=T0 + 2 * MINUTE))
    assert ScaleWorkload("canary", 0) not in seen.actions
    assert seen.status.canary_scale_down_at is None


def test_an_abort_waits_the_abort_delay_before_scaling_down() -> None:
    spec = make_spec(
        strategy={"canary": {"steps": [{"setWeight": 20}], "abortScaleDownDelaySeconds": 5}}
    )
    status = initialized(spec)
    status.phase = RolloutPhase.ABORTED
    left = observe("v1", stable=ready("v1"), canary=ready("v2"))
    seen = step(spec, status, left)
    assert seen.status.canary_scale_down_at == T0 + timedelta(seconds=5)


def test_the_target_is_scaled_to_zero_only_after_the_route_is_applied_and_the_delay() -> None:
    spec = make_spec()
    status = initialized(spec)
    running = observe("v1", stable=ready("v1"), target_running=True, traffic_applied=False)
    assert step(spec, status, running).actions == ()
    applied = replace(running, traffic_applied=True)
    seen = step(spec, status, applied)
    assert seen.actions == ()
    assert seen.status.target_scale_down_at == T0 + timedelta(seconds=30)
    due = step(spec, seen.status, replace(applied, now=T0 + timedelta(seconds=30)))
    assert due.actions == (ReleaseTarget(),)
    released = step(spec, due.status, replace(applied, target_running=False))
    assert released.actions == ()
    assert released.status.target_scale_down_at is None


# --- starting a rollout ---------------------------------------------------------------------


def test_new_revision_starts_a_rollout() -> None:
    spec = make_spec()
    decision = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    st = decision.status
    assert st.phase is RolloutPhase.PROGRESSING
    assert (st.canary_revision, st.current_step_index, st.canary_weight) == ("v2", 0, 0)
    assert st.rollout_started_at == T0
    assert st.failed_checks == 0
    assert decision.actions[0] == set_weight(0)
    assert EnsureWorkload(role="canary", revision="v2", replicas=REPLICAS) in decision.actions
    assert "RolloutStarted" in events(decision)
    # Woken when the canary becomes ready; at the latest at its progress deadline.
    assert decision.requeue_after == pytest.approx(600.0)
    assert condition(st, "Ready") == "False"
    assert condition(st, "Progressing") == "True"


def test_waiting_for_the_canary_then_first_step() -> None:
    spec = make_spec()
    started = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    waiting = step(
        spec,
        started.status,
        observe(
            "v2", now=T0 + 30 * timedelta(seconds=1), stable=ready("v1"), canary=starting("v2")
        ),
    )
    assert waiting.actions == ()
    assert waiting.requeue_after == pytest.approx(570.0)  # what is left of the deadline
    go = step(spec, waiting.status, at(T0 + MINUTE))
    assert go.actions == (set_weight(20),)
    assert go.status.canary_weight == 20
    # Asked for, not yet seen on the route: the step (and its analysis window) waits.
    assert go.status.step_started_at is None
    # Woken by the route's watch event, or at the progress deadline.
    assert go.requeue_after == pytest.approx(600.0)
    unrouted = step(spec, go.status, at(T0 + MINUTE, traffic=Traffic(canary_weight=0)))
    assert unrouted.status.step_started_at is None
    # (The write was lost or undone: it is made again, before anything else.)
    assert unrouted.actions == (SetTraffic(Traffic(canary_weight=20), restore=True),)
    # Written, not yet applied by the gateway: still waiting.
    unapplied = step(spec, go.status, at(T0 + MINUTE, traffic_applied=False))
    assert unapplied.status.step_started_at is None and unapplied.actions == ()
    assert "waiting for the gateway to apply weight 20" in unapplied.status.message
    held = step(spec, go.status, at(T0 + MINUTE + timedelta(seconds=1)))
    assert held.actions == ()
    assert held.status.step_started_at == T0 + MINUTE + timedelta(seconds=1)
    assert held.status.next_measurement_at == T0 + 2 * MINUTE + timedelta(seconds=1)
    assert held.requeue_after == pytest.approx(60.0)


def test_progress_deadline_rolls_back() -> None:
    spec = make_spec(progressDeadlineSeconds=60)
    started = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    late = observe(
        "v2", now=T0 + 61 * timedelta(seconds=1), stable=ready("v1"), canary=starting("v2")
    )
    decision = step(spec, started.status, late)
    assert decision.status.phase is RolloutPhase.FAILED
    assert decision.actions[0] == set_weight(0)
    assert ScaleWorkload(role="canary", replicas=0) not in decision.actions  # not yet applied
    assert (
        "ProgressDeadlineExceeded"
        in (decision.status.condition("Degraded") or pytest.fail()).reason
    )


def test_a_route_the_gateway_never_applies_rolls_back_at_the_progress_deadline() -> None:
    spec = make_spec(progressDeadlineSeconds=60)
    started = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    canary_ready = observe("v2", now=T0, stable=ready("v1"), canary=ready("v2"))
    go = step(spec, started.status, canary_ready)
    assert weights(go) == [20]
    stuck = replace(canary_ready, traffic=Traffic(20), traffic_applied=False)
    waiting = step(spec, go.status, replace(stuck, now=T0 + timedelta(seconds=59)))
    assert waiting.status.phase is RolloutPhase.PROGRESSING
    assert waiting.requeue_after == pytest.approx(1.0)
    late = step(spec, waiting.status, replace(stuck, now=T0 + timedelta(seconds=60)))
    assert late.status.phase is RolloutPhase.FAILED
    assert weights(late) == [0]
    assert "did not apply weight 20 within 60s" in late.status.message


# --- analysis -------------------------------------------------------------------------------


def test_measurement_is_needed_only_when_due() -> None:
    spec = make_spec()
    status = rolling(spec)
    assert not needs_measurement(spec, status, T0)
    assert not needs_measurement(spec, status, T0 + MINUTE - timedelta(seconds=1))
    assert needs_measurement(spec, status, T0 + MINUTE)
    assert not needs_measurement(make_spec(paused=True), status, T0 + MINUTE)
    assert not needs_measurement(make_spec(skipAnalysis=True), status, T0 + MINUTE)
    assert not needs_measurement(make_spec(metrics=False), status, T0 + MINUTE)


def test_not_due_yet_is_idle() -> None:
    spec = make_spec()
    status = rolling(spec)
    decision = step(spec, status, at(T0 + timedelta(seconds=20)))
    assert decision.actions == ()
    assert decision.status == status
    assert decision.requeue_after == pytest.approx(40.0)


def test_due_without_measurements_does_not_advance() -> None:
    spec = make_spec()
    status = rolling(spec)
    decision = step(spec, status, at(T0 + MINUTE))
    assert decision.actions == ()
    assert decision.status.current_step_index == 0


def test_passing_measurement_advances_to_the_next_step() -> None:
    spec = make_spec()
    decision = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing()))
    st = decision.status
    assert decision.actions == (set_weight(60),)
    assert (st.current_step_index, st.canary_weight, st.passed_checks) == (1, 60, 0)
    assert st.metrics[0].phase == "Passed" and st.metrics[0].value == 0.01
    assert st.metrics[0].measured_at == T0 + MINUTE


@pytest.mark.parametrize(
    ("measurement", "phase", "text"),
    [
        (
            Measurement("error-rate", 0.48),
            "Failed",
            'metric "error-rate" value 0.48 outside [0, 0.05]',
        ),
        (Measurement("error-rate", -1.0), "Failed", "value -1 outside [0, 0.05]"),
    ],
    ids=["too-high", "too-low"],
)
def test_failed_measurement_counts_then_rolls_back(
    measurement: Measurement, phase: str, text: str
) -> None:
    spec = make_spec()
    first = step(spec, rolling(spec), at(T0 + MINUTE, measurements=(measurement,)))
    st = first.status
    assert st.phase is RolloutPhase.PROGRESSING
    assert (st.failed_checks, st.current_step_index, st.canary_weight) == (1, 0, 20)
    assert st.next_measurement_at == T0 + 2 * MINUTE
    assert st.metrics[0].phase == phase
    assert text in st.metrics[0].message
    assert weights(first) == []
    assert "CheckFailed" in events(first)

    second = step(spec, st, at(T0 + 2 * MINUTE, measurements=(measurement,)))
    st = second.status
    assert st.phase is RolloutPhase.FAILED
    assert second.actions[0] == set_weight(0)
    assert ScaleWorkload(role="canary", replicas=0) not in second.actions
    assert events(second) == ["RolledBack"]
    assert st.canary_weight == 0
    assert text in st.message and "(failure 2 of limit 2)" in st.message
    assert condition(st, "Degraded") == "True"
    assert condition(st, "Ready") == "False"
    assert st.canary_revision == "v2"


INCONCLUSIVE = [
    (Measurement("error-rate", float("nan")), "NoData", 'metric "error-rate" returned NaN'),
    (Measurement("error-rate", None), "NoData", 'metric "error-rate" returned no data'),
    (Measurement("error-rate", 0.01, "timeout"), "Error", "query failed: timeout"),
    (Measurement("other", 0.01), "NoData", "returned no data"),
]
INCONCLUSIVE_IDS = ["nan", "no-data", "error", "missing"]


@pytest.mark.parametrize(("measurement", "phase", "text"), INCONCLUSIVE, ids=INCONCLUSIVE_IDS)
def test_inconclusive_measurements_hold_the_step_then_roll_back_at_the_limit(
    measurement: Measurement, phase: str, text: str
) -> None:
    spec = make_spec()  # inconclusiveLimit 3, onInconclusive RollBack (the defaults)
    st = rolling(spec)
    for n in (1, 2):
        held = step(spec, st, at(T0 + n * MINUTE, measurements=(measurement,)))
        st = held.status
        assert st.phase is RolloutPhase.PROGRESSING
        assert (st.failed_checks, st.inconclusive_checks) == (0, n)
        assert (st.current_step_index, st.canary_weight) == (0, 20)
        assert st.metrics[0].phase == phase and text in st.metrics[0].message
        assert weights(held) == [] and events(held) == ["CheckInconclusive"]
        assert st.next_measurement_at == T0 + (n + 1) * MINUTE
    third = step(spec, st, at(T0 + 3 * MINUTE, measurements=(measurement,)))
    st = third.status
    assert st.phase is RolloutPhase.FAILED and weights(third) == [0]
    assert "(inconclusive 3 in a row of limit 3)" in st.message
    assert condition(st, "Degraded") == "True"


def test_a_passing_or_failing_check_ends_a_run_of_inconclusive_ones() -> None:
    spec = make_spec(steps=[{"analysis": {"iterations": 3}}, {"setWeight": 50}])
    st = rolling(spec)
    nothing = (Measurement("error-rate", None),)
    script = [nothing, nothing, passing(), nothing, nothing, (Measurement("error-rate", 0.9),)]
    for n, measurements in enumerate(script, start=1):
        st = step(spec, st, at(T0 + n * MINUTE, measurements=measurements)).status
    assert st.phase is RolloutPhase.PROGRESSING
    assert (st.passed_checks, st.failed_checks, st.inconclusive_checks) == (1, 1, 0)
    # Two more inconclusive ones and a pass: still at the step, never promoted on them.
    for n, measurements in enumerate([nothing, nothing, passing(), passing()], start=7):
        st = step(spec, st, at(T0 + n * MINUTE, measurements=measurements)).status
    assert st.current_step_index == 1


def test_on_inconclusive_pause_waits_for_a_person() -> None:
    spec = make_spec()
    spec.analysis.on_inconclusive = OnInconclusive.PAUSE
    st = rolling(spec)
    nothing = (Measurement("error-rate", None, "connection refused"),)
    for n in (1, 2, 3):
        decision = step(spec, st, at(T0 + n * MINUTE, measurements=nothing))
        st = decision.status
    assert st.phase is RolloutPhase.PAUSED and st.inconclusive_pause
    assert "AnalysisInconclusive" in events(decision) and weights(decision) == []
    assert not needs_measurement(spec, st, T0 + 10 * MINUTE)
    idle = step(spec, st, at(T0 + 10 * MINUTE))
    assert idle.actions == () and idle.status.phase is RolloutPhase.PAUSED
    resumed = step(spec, st, at(T0 + 11 * MINUTE, requests={PROMOTE_ANNOTATION: "ops"}))
    st = resumed.status
    assert resumed.actions[0] == ClearRequest(PROMOTE_ANNOTATION)
    assert st.phase is RolloutPhase.PROGRESSING and not st.inconclusive_pause
    assert st.inconclusive_checks == 0 and st.next_measurement_at == T0 + 12 * MINUTE
    done = step(spec, st, at(T0 + 12 * MINUTE, measurements=passing()))
    assert set_weight(60) in done.actions


def test_rollback_message_format() -> None:
    spec = make_spec()
    status = rolling(spec)
    for minute in (1, 2):
        status = step(spec, status, at(T0 + minute * MINUTE, measurements=passing(0.48))).status
    assert (
        status.message == 'metric "error-rate" value 0.48 outside [0, 0.05] (failure 2 of limit 2)'
    )


def test_failed_revision_is_not_retried_but_a_newer_one_is() -> None:
    metrics = [{"name": "error-rate", "query": "q", "thresholdRange": {"max": 0.05}}]
    spec = make_spec(analysis={"failureLimit": 1, "metrics": metrics})
    failed = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing(1.0))).status
    assert failed.phase is RolloutPhase.FAILED
    same = step(spec, failed, observe("v2", now=T0 + 2 * MINUTE, stable=ready("v1")))
    assert same.actions == () and same.status == failed
    newer = step(spec, failed, observe("v3", now=T0 + 3 * MINUTE, stable=ready("v1")))
    assert newer.status.phase is RolloutPhase.PROGRESSING
    assert newer.status.canary_revision == "v3"
    assert newer.status.failed_checks == 0


def test_analysis_step_needs_all_iterations() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"analysis": {"iterations": 3}}])
    status = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing())).status
    assert status.current_step_index == 1
    assert status.next_measurement_at == T0 + 2 * MINUTE
    for minute, expected in ((2, 1), (3, 2)):
        status = step(spec, status, at(T0 + minute * MINUTE, measurements=passing())).status
        assert (status.current_step_index, status.passed_checks) == (1, expected)
    done = step(spec, status, at(T0 + 4 * MINUTE, measurements=passing()))
    assert done.status.phase is RolloutPhase.SUCCEEDED  # (the canary runs at full size)
    assert events(done) == ["Promoting", "Promoted"]


def test_skip_analysis_holds_each_weight_for_one_interval() -> None:
    spec = make_spec(skipAnalysis=True)
    status = rolling(spec)
    assert status.canary_weight == 20
    hold = step(spec, status, at(T0 + timedelta(seconds=30)))
    assert hold.actions == () and hold.requeue_after == pytest.approx(30.0)
    nxt = step(spec, status, at(T0 + MINUTE))
    assert nxt.actions == (set_weight(60),)


def test_no_metrics_skips_analysis_steps() -> None:
    spec = make_spec(steps=[{"analysis": {}}, {"setWeight": 40}], metrics=False)
    status = rolling(spec)
    assert status.current_step_index == 1
    assert status.canary_weight == 40


# --- pauses ---------------------------------------------------------------------------------


def test_timed_pause() -> None:
    spec = make_spec(steps=[{"pause": {"duration": "90s"}}, {"setWeight": 50}])
    status = rolling(spec)
    assert status.current_step_index == 0 and status.step_started_at == T0
    waiting = step(spec, status, at(T0 + MINUTE))
    assert waiting.actions == () and waiting.requeue_after == pytest.approx(30.0)
    done = step(spec, status, at(T0 + timedelta(seconds=90)))
    assert done.actions == (set_weight(50),)


def test_indefinite_pause_waits_for_promotion() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}], metrics=False)
    status = step(spec, rolling(spec), at(T0 + MINUTE)).status
    assert status.phase is RolloutPhase.PAUSED
    assert condition(status, "Progressing") == "True"
    idle = step(spec, status, at(T0 + 10 * MINUTE))
    assert idle.actions == () and idle.status == status and idle.requeue_after is None
    promoted = step(spec, status, at(T0 + 11 * MINUTE, requests={PROMOTE_ANNOTATION: "alice"}))
    assert promoted.actions[0] == ClearRequest(PROMOTE_ANNOTATION)
    assert set_weight(50) in promoted.actions
    assert promoted.status.phase is RolloutPhase.PROGRESSING


# --- requests: abort, retry, promote --full, promote ------------------------------------------


def test_abort_mid_rollout_puts_all_traffic_on_stable_and_keeps_the_revision_out() -> None:
    spec = make_spec()
    status = rolling(spec)
    aborted = step(spec, status, at(T0 + MINUTE, requests={ABORT_ANNOTATION: "alice"}))
    assert aborted.actions[:2] == (ClearRequest(ABORT_ANNOTATION), set_weight(0))
    assert ScaleWorkload(role="canary", replicas=0) not in aborted.actions
    st = aborted.status
    assert st.phase is RolloutPhase.ABORTED and st.canary_weight == 0
    assert st.stable_revision == "v1" and st.canary_revision == "v2"
    assert "asked by alice" in (st.message or "")
    assert events(aborted) == ["Aborted"]
    assert condition(st, "Degraded") == "True" and condition(st, "Ready") == "False"
    # The aborted revision is not tried again by itself.
    later = step(spec, st, observe("v2", now=T0 + 2 * MINUTE, stable=ready("v1")))
    assert later.status.phase is RolloutPhase.ABORTED and weights(later) == []
    # A new revision is rolled out as usual.
    newer = step(spec, st, observe("v3", now=T0 + 3 * MINUTE, stable=ready("v1")))
    assert newer.status.phase is RolloutPhase.PROGRESSING and newer.status.canary_revision == "v3"


def test_abort_acts_under_spec_paused_too() -> None:
    spec = make_spec()
    status = rolling(spec)
    paused = spec.model_copy(update={"paused": True})
    aborted = step(paused, status, at(T0 + MINUTE, requests={ABORT_ANNOTATION: "bob"}))
    assert aborted.status.phase is RolloutPhase.ABORTED and set_weight(0) in aborted.actions


def test_retry_runs_an_aborted_or_failed_revision_again_from_the_first_step() -> None:
    spec = make_spec()
    aborted = step(spec, rolling(spec), at(T0 + MINUTE, requests={ABORT_ANNOTATION: "a"})).status
    canary_down = ready("v2", replicas=0)
    retried = step(
        spec,
        aborted,
        observe(
            "v2",
            now=T0 + 2 * MINUTE,
            stable=ready("v1"),
            canary=canary_down,
            requests={RETRY_ANNOTATION: "carol"},
        ),
    )
    st = retried.status
    assert retried.actions[0] == ClearRequest(RETRY_ANNOTATION)
    assert st.phase is RolloutPhase.PROGRESSING and st.current_step_index == 0
    assert st.canary_revision == "v2" and st.failed_checks == 0
    assert st.rollout_started_at == T0 + 2 * MINUTE
    assert events(retried) == ["RolloutRetried"]
    assert EnsureWorkload(role="canary", revision="v2", replicas=REPLICAS) in retried.actions


def test_retry_of_a_rollout_that_did_not_fail_is_refused_and_cleared() -> None:
    spec = make_spec()
    status = rolling(spec)
    refused = step(spec, status, at(T0 + MINUTE, requests={RETRY_ANNOTATION: "dave"}))
    assert ClearRequest(RETRY_ANNOTATION) in refused.actions
    assert "RequestRefused" in events(refused)
    assert refused.status.phase is RolloutPhase.PROGRESSING
    assert refused.status.current_step_index == status.current_step_index


def test_promote_full_skips_the_remaining_steps_and_analysis() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"setWeight": 30}, {"setWeight": 60}])
    full = step(spec, rolling(spec), at(T0 + MINUTE, requests={PROMOTE_FULL_ANNOTATION: "erin"}))
    assert full.actions[0] == ClearRequest(PROMOTE_FULL_ANNOTATION)
    assert events(full) == ["PromotedFully", "Promoting", "Promoted"]
    assert full.status.phase is RolloutPhase.SUCCEEDED and full.status.stable_revision == "v2"


@pytest.mark.parametrize("annotation", [ABORT_ANNOTATION, PROMOTE_FULL_ANNOTATION])
def test_requests_with_no_rollout_to_act_on_are_refused(annotation: str) -> None:
    spec = make_spec()
    status = initialized(spec)
    refused = step(spec, status, observe("v1", stable=ready("v1"), requests={annotation: "x"}))
    assert refused.actions[0] == ClearRequest(annotation)
    assert events(refused) == ["RequestRefused"]
    assert refused.status.phase is RolloutPhase.INITIALIZED


def test_promote_without_a_pause_is_refused_but_waits_for_a_pause_it_did_not_reach() -> None:
    spec = make_spec(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}], metrics=False)
    analysing = make_spec()
    refused = step(
        analysing, rolling(analysing), at(T0 + MINUTE, requests={PROMOTE_ANNOTATION: "f"})
    )
    assert ClearRequest(PROMOTE_ANNOTATION) in refused.actions
    assert "RequestRefused" in events(refused)
    paused = step(spec, rolling(spec), at(T0 + MINUTE)).status
    assert paused.phase is RolloutPhase.PAUSED
    # The route was changed by hand: this call restores it and does not reach the pause.
    elsewhere = at(T0 + 2 * MINUTE, requests={PROMOTE_ANNOTATION: "f"}, traffic=Traffic(0))
    waiting = step(spec, paused, elsewhere)
    assert ClearRequest(PROMOTE_ANNOTATION) not in waiting.actions
    assert "RequestRefused" not in events(waiting)


# --- promotion ------------------------------------------------------------------------------


BEFORE_FLIP = Selection(stable="v1", canary="v2")
FLIPPED = Selection(stable="v2", canary="v2")


def test_promotion_flips_the_stable_service_to_the_analysed_copy() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    promoting = step(
        spec, rolling(spec), at(T0 + MINUTE, measurements=passing(), selected=BEFORE_FLIP)
    )
    assert promoting.status.phase is RolloutPhase.PROMOTING
    # No pod is made: the analysed copy runs at full size already. Its pods take the role.
    assert not any(isinstance(a, EnsureWorkload | ScaleWorkload) for a in promoting.actions)
    assert PointService("stable", "v2") in promoting.actions
    assert weights(promoting) == []  # the last step's split holds until the flip is seen
    # Woken by the Service changing, or at the progress deadline at the latest.
    assert promoting.requeue_after == spec.progress_deadline_seconds

    done = step(spec, promoting.status, at(T0 + 2 * MINUTE, selected=FLIPPED))
    assert done.actions[0] == set_weight(0)
    assert not any(isinstance(a, EnsureWorkload | ScaleWorkload) for a in done.actions)
    assert "Promoted" in events(done)
    st = done.status
    assert st.phase is RolloutPhase.SUCCEEDED
    assert (st.stable_revision, st.canary_revision, st.canary_weight) == ("v2", None, 0)
    assert st.retiring == ["v1"]  # the stable copy before, once nothing needs it
    assert condition(st, "Ready") == "True"
    assert done.requeue_after is None

    # The copy before goes once the route and the Services are seen on v2, after the
    # scale-down delay; its template is kept (the release before, for a later rollback).
    seen = {"stable": ready("v2"), "selected": FLIPPED}
    waiting = step(
        spec, st, observe("v2", now=T0 + 3 * MINUTE, retiring={"v1": ready("v1")}, **seen)
    )
    assert waiting.actions == ()
    assert waiting.status.retire_at == T0 + 3 * MINUTE + timedelta(seconds=30)
    removed = step(
        spec,
        waiting.status,
        observe("v2", now=T0 + 4 * MINUTE, retiring={"v1": ready("v1")}, **seen),
    )
    assert removed.actions == (RemoveCopy("v1", keep_template=True),)
    gone = step(
        spec, removed.status, observe("v2", now=T0 + 5 * MINUTE, retiring={"v1": None}, **seen)
    )
    assert gone.actions == () and gone.status.retiring == []


def test_a_copy_in_use_is_never_removed() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    promoting = step(
        spec, rolling(spec), at(T0 + MINUTE, measurements=passing(), selected=BEFORE_FLIP)
    )
    done = step(spec, promoting.status, at(T0 + 2 * MINUTE, selected=FLIPPED)).status
    old = {"v1": ready("v1")}
    for selected, applied in ((BEFORE_FLIP, True), (FLIPPED, False)):
        for minutes in (3, 30):
            held = step(
                spec,
                done,
                observe(
                    "v2",
                    now=T0 + minutes * MINUTE,
                    stable=ready("v2"),
                    selected=selected,
                    retiring=old,
                    traffic_applied=applied,
                ),
            )
            assert not any(isinstance(a, RemoveCopy) for a in held.actions)
            assert held.status.retire_at is None


def test_a_smaller_canary_is_brought_to_the_stable_size_before_the_flip() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    status = promoting_status(spec)
    small = at(T0 + 2 * MINUTE, canary=ready("v2", 1), selected=BEFORE_FLIP)
    growing = step(spec, status, small)
    assert growing.status.phase is RolloutPhase.PROMOTING
    assert growing.actions == (EnsureWorkload(role="canary", revision="v2", replicas=REPLICAS),)
    assert step(spec, status, replace(small, canary=starting("v2"))).actions == ()
    grown = step(spec, status, replace(small, canary=ready("v2")))
    assert grown.actions == (PointService("stable", "v2"),)


def promoting_status(spec: RolloutSpec) -> RolloutStatus:
    """A rollout whose last step passed at T0 + 1 min: promotion under way, waiting for the
    stable Service to be seen on the canary's copy."""
    promoting = step(
        spec, rolling(spec), at(T0 + MINUTE, measurements=passing(), selected=BEFORE_FLIP)
    )
    assert promoting.status.phase is RolloutPhase.PROMOTING
    return promoting.status


def test_promotion_that_cannot_finish_is_rolled_back_at_the_deadline() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], progressDeadlineSeconds=120)
    status = promoting_status(spec)
    # The analysed copy never gets to the stable size (a quota, say).
    never = observe(
        "v2", now=T0 + 2 * MINUTE, stable=ready("v1"), canary=starting("v2"), selected=BEFORE_FLIP
    )
    waiting = step(spec, status, never)
    assert waiting.status.phase is RolloutPhase.PROMOTING
    assert waiting.requeue_after == MINUTE.total_seconds()  # at the deadline

    late = step(spec, waiting.status, replace(never, now=T0 + 3 * MINUTE))
    st = late.status
    assert st.phase is RolloutPhase.FAILED
    assert st.stable_revision == "v1" and st.canary_weight == 0
    assert late.actions[0] == set_weight(0)
    assert not any(isinstance(a, PointService) for a in late.actions)
    assert "RolledBack" in events(late)
    degraded = st.condition("Degraded")
    assert degraded is not None and degraded.reason == "ProgressDeadlineExceeded"


def test_a_flip_never_seen_is_rolled_back_at_the_deadline_and_not_asked_for_again() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], progressDeadlineSeconds=120)
    status = promoting_status(spec)
    refused = at(T0 + 2 * MINUTE, selected=BEFORE_FLIP)  # (a policy refuses the write)
    asking = step(spec, status, refused)
    assert asking.actions == (PointService("stable", "v2"),)
    late = step(spec, asking.status, replace(refused, now=T0 + 3 * MINUTE))
    assert late.status.phase is RolloutPhase.FAILED
    assert not any(isinstance(a, PointService) for a in late.actions)
    assert "still waiting for Service app-stable" in late.status.message


def test_a_paused_promotion_is_not_counted_against_the_deadline() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], progressDeadlineSeconds=120)
    status = promoting_status(spec)
    stuck = {"stable": ready("v1"), "canary": starting("v2"), "selected": BEFORE_FLIP}
    paused_spec = spec.model_copy(update={"paused": True})
    paused = step(paused_spec, status, observe("v2", now=T0 + 2 * MINUTE, **stuck))
    assert paused.status.phase is RolloutPhase.PROMOTING
    # Resumed long after the deadline would have passed: the wait starts again.
    resumed = step(spec, paused.status, observe("v2", now=T0 + 30 * MINUTE, **stuck))
    assert resumed.status.phase is RolloutPhase.PROMOTING
    late = step(spec, resumed.status, observe("v2", now=T0 + 32 * MINUTE, **stuck))
    assert late.status.phase is RolloutPhase.FAILED


def test_an_abort_past_the_flip_points_the_stable_service_back() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    status = promoting_status(spec)
    asked = at(
        T0 + 2 * MINUTE, selected=Selection(stable="v2", canary="v2"),
        requests={ABORT_ANNOTATION: "alice"},
    )  # fmt: skip
    aborted = step(spec, status, asked)
    st = aborted.status
    assert st.phase is RolloutPhase.ABORTED
    assert (st.stable_revision, st.canary_weight) == ("v1", 0)
    assert PointService("stable", "v1") in aborted.actions
    # The canary's copy keeps its pods while the stable Service still selects it.
    later = replace(asked, now=T0 + 30 * MINUTE, requests={})
    assert not any(isinstance(a, ScaleWorkload) for a in step(spec, st, later).actions)
    back = replace(later, selected=Selection(stable="v1", canary="v2"))
    first = step(spec, st, back)
    assert first.status.canary_scale_down_at is not None


def test_abort_during_promotion() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    status = promoting_status(spec)
    asked = observe(
        "v2",
        now=T0 + 2 * MINUTE,
        stable=starting("v2"),
        canary=ready("v2"),
        requests={ABORT_ANNOTATION: "alice"},
    )
    aborted = step(spec, status, asked)
    st = aborted.status
    assert st.phase is RolloutPhase.ABORTED
    assert (st.stable_revision, st.canary_weight) == ("v1", 0)
    assert ClearRequest(ABORT_ANNOTATION) in aborted.actions
    assert EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS) in aborted.actions
    assert "Aborted" in events(aborted)
    assert "RequestRefused" not in events(aborted)


def test_newer_revision_during_promotion_waits_for_it_to_finish() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    promoting = promoting_status(spec)
    done = step(
        spec, promoting, at(T0 + 2 * MINUTE, target="v3", canary=ready("v2"), selected=FLIPPED)
    )
    assert done.status.phase is RolloutPhase.SUCCEEDED
    assert done.status.stable_revision == "v2"
    assert done.requeue_after == pytest.approx(0.1)  # the newer revision, right away
    nxt = step(spec, done.status, observe("v3", now=T0 + 2 * MINUTE, stable=ready("v2")))
    assert nxt.status.phase is RolloutPhase.PROGRESSING and nxt.status.canary_revision == "v3"


# --- interruptions --------------------------------------------------------------------------


def test_newer_revision_restarts_from_step_zero() -> None:
    spec = make_spec()
    status = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing())).status
    assert status.canary_weight == 60
    decision = step(
        spec, status, observe("v3", now=T0 + 2 * MINUTE, stable=ready("v1"), canary=ready("v2"))
    )
    assert decision.actions[0] == set_weight(0)
    assert EnsureWorkload(role="canary", revision="v3", replicas=REPLICAS) in decision.actions
    st = decision.status
    assert (st.phase, st.canary_revision, st.current_step_index, st.canary_weight) == (
        RolloutPhase.PROGRESSING,
        "v3",
        0,
        0,
    )
    assert st.rollout_started_at == T0 + 2 * MINUTE


def test_reverting_to_stable_cancels() -> None:
    spec = make_spec()
    status = rolling(spec)
    decision = step(
        spec, status, observe("v1", now=T0 + MINUTE, stable=ready("v1"), canary=ready("v2"))
    )
    assert decision.actions[0] == set_weight(0)
    assert ScaleWorkload(role="canary", replicas=0) not in decision.actions
    assert "Cancelled" in events(decision)
    assert decision.status.phase is RolloutPhase.CANCELLED
    assert decision.status.canary_weight == 0
    assert condition(decision.status, "Ready") == "True"


def test_spec_paused_freezes_a_rollout() -> None:
    spec = make_spec()
    paused_spec = make_spec(paused=True)
    status = rolling(spec)
    paused = step(paused_spec, status, at(T0 + 5 * MINUTE, measurements=passing()))
    assert paused.actions == ()
    assert paused.status.phase is RolloutPhase.PAUSED
    assert paused.requeue_after is None
    assert step(paused_spec, paused.status, at(T0 + 6 * MINUTE)).status == paused.status
    resumed = step(spec, paused.status, at(T0 + 7 * MINUTE, measurements=passing()))
    assert resumed.status.phase is RolloutPhase.PROGRESSING
    assert resumed.actions == (set_weight(60),)


def test_spec_paused_blocks_a_new_rollout() -> None:
    spec = make_spec(paused=True)
    status = initialized(make_spec())
    decision = step(spec, status, observe("v2", stable=ready("v1")))
    assert decision.actions == ()
    assert decision.status.phase is RolloutPhase.INITIALIZED


# --- conditions -----------------------------------------------------------------------------


def test_transition_time_changes_only_with_the_status() -> None:
    spec = make_spec()
    status = rolling(spec)
    ready_since = status.condition("Ready")
    assert ready_since is not None
    later = step(spec, status, at(T0 + MINUTE, measurements=passing())).status
    ready_later = later.condition("Ready")
    progressing = later.condition("Progressing")
    assert ready_later is not None and progressing is not None
    assert ready_later.last_transition_time == ready_since.last_transition_time
    assert progressing.last_transition_time == T0
    assert [c.observed_generation for c in later.conditions] == [1, 1, 1]


def test_observed_generation_follows_the_spec() -> None:
    spec = make_spec()
    status = initialized(spec)
    decision = step(spec, status, replace(observe("v1", stable=ready("v1")), generation=7))
    assert decision.status.observed_generation == 7
    assert all(c.observed_generation == 7 for c in decision.status.conditions)
    assert decision.actions == ()


# --- a target that went away ----------------------------------------------------------------


def test_a_target_gone_mid_rollout_rolls_back_even_with_a_promotion_asked() -> None:
    spec = make_spec()
    status = rolling(spec)
    gone = at(T0 + MINUTE, target="v2", target_found=False, requests={PROMOTE_FULL_ANNOTATION: "a"})
    decision = step(spec, status, gone)
    assert decision.status.phase is RolloutPhase.FAILED
    assert weights(decision) == [0]
    assert "deleted mid-rollout" in decision.status.message
    assert condition(decision.status, "Degraded") == "True"
    assert "RequestRefused" in events(decision)  # nothing new can be promoted


def test_a_promotion_under_way_finishes_without_the_target() -> None:
    spec = make_spec(steps=[{"setWeight": 50}])
    promoting = promoting_status(spec)
    gone = at(T0 + 2 * MINUTE, selected=FLIPPED, target_found=False)
    done = step(spec, promoting, gone)
    assert done.status.phase is RolloutPhase.SUCCEEDED
    assert done.status.stable_revision == "v2"


def test_between_rollouts_a_target_gone_changes_nothing() -> None:
    spec = make_spec()
    status = initialized(spec)
    gone = observe("v1", stable=ready("v1"), target_found=False)
    decision = step(spec, status, gone)
    assert decision.actions == ()
    assert decision.status.phase is RolloutPhase.INITIALIZED
