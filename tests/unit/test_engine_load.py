"""The engine's rule for spec.analysis.load: a lease of load asked for as a step's analysis
starts and at each measurement after which it goes on, never otherwise."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_engine import MINUTE, T0, at, make_spec, passing, rolling, step

from tidegate.analysis import Measurement
from tidegate.api import OnInconclusive, RolloutPhase, RolloutSpec
from tidegate.engine import Decision, DriveLoad, load_lease

LOAD = {"url": "http://{{ canaryService }}.{{ namespace }}.svc/", "rate": 20}


def with_load(**options: Any) -> RolloutSpec:
    spec = make_spec(**options)
    analysis = spec.analysis.model_dump(by_alias=True, exclude_none=True)
    return make_spec(**options, analysis={**analysis, "load": LOAD})


def leases(decision: Decision) -> list[float]:
    return [a.seconds for a in decision.actions if isinstance(a, DriveLoad)]


def no_data() -> tuple[Measurement, ...]:
    return (Measurement("error-rate", None),)


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [(timedelta(seconds=4), 9.0), (timedelta(seconds=10), 15.0), (MINUTE, 90.0)],
)
def test_a_lease_covers_the_next_interval_and_some_slack(
    interval: timedelta, seconds: float
) -> None:
    assert load_lease(interval) == seconds


def test_load_is_asked_for_as_the_analysis_of_a_step_starts() -> None:
    spec = with_load()
    status = rolling(spec)  # the first step's route write, then the step started
    started = step(spec, status.model_copy(update={"step_started_at": None}), at(T0))
    assert leases(started) == [90.0]
    assert started.status.step_started_at == T0


def test_no_load_while_waiting_for_the_next_measurement() -> None:
    spec = with_load()
    decision = step(spec, rolling(spec), at(T0 + MINUTE / 2))
    assert leases(decision) == []


def test_the_lease_is_renewed_at_each_measurement_after_which_the_step_goes_on() -> None:
    spec = with_load(steps=[{"analysis": {"iterations": 2}}, {"setWeight": 50}])
    first = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing()))
    assert first.status.passed_checks == 1 and leases(first) == [90.0]
    inconclusive = step(spec, first.status, at(T0 + 2 * MINUTE, measurements=no_data()))
    assert inconclusive.status.inconclusive_checks == 1 and leases(inconclusive) == [90.0]
    failed = step(
        spec, inconclusive.status, at(T0 + 3 * MINUTE, measurements=(Measurement("error-rate", 1),))
    )
    assert failed.status.failed_checks == 1 and leases(failed) == [90.0]


def test_a_step_that_passes_asks_for_the_next_steps_load_only() -> None:
    spec = with_load()  # setWeight 20, then setWeight 60: both analysed
    passed = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing()))
    assert passed.status.current_step_index == 1 and leases(passed) == []  # route first
    started = step(spec, passed.status, at(T0 + MINUTE + timedelta(seconds=1)))
    assert leases(started) == [90.0]


def test_the_last_passing_measurement_asks_for_no_more() -> None:
    spec = with_load(steps=[{"setWeight": 20}])
    promoted = step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing()))
    assert promoted.status.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)
    assert leases(promoted) == []


def test_a_rollback_asks_for_no_more_load() -> None:
    spec = with_load()
    spec.analysis.failure_limit = 1
    failed = step(
        spec, rolling(spec), at(T0 + MINUTE, measurements=(Measurement("error-rate", 1),))
    )
    assert failed.status.phase is RolloutPhase.FAILED and leases(failed) == []


def test_no_load_while_paused_for_inconclusive_checks_and_again_once_promoted() -> None:
    spec = with_load()
    spec.analysis.on_inconclusive = OnInconclusive.PAUSE
    spec.analysis.inconclusive_limit = 1
    paused = step(spec, rolling(spec), at(T0 + MINUTE, measurements=no_data()))
    assert paused.status.phase is RolloutPhase.PAUSED and leases(paused) == []
    later = step(spec, paused.status, at(T0 + 2 * MINUTE))
    assert leases(later) == []
    resumed = step(
        spec, paused.status, at(T0 + 3 * MINUTE, requests={"tidegate.io/promote": "someone"})
    )
    assert resumed.status.phase is RolloutPhase.PROGRESSING and leases(resumed) == [90.0]


def test_without_load_nothing_is_asked() -> None:
    spec = make_spec()
    status = rolling(spec).model_copy(update={"step_started_at": None})
    assert leases(step(spec, status, at(T0))) == []
    assert leases(step(spec, rolling(spec), at(T0 + MINUTE, measurements=passing()))) == []


def test_skipped_analysis_drives_no_load() -> None:
    spec = with_load(skipAnalysis=True)
    status = rolling(spec).model_copy(update={"step_started_at": None})
    assert leases(step(spec, status, at(T0))) == []
