"""The engine's one rule for autoscaled copies (spec.autoscalerRef): a copy's replica count is
its HPA's. Any non-zero count is accepted, kept across a template change and never reset;
readiness means rolled out at its own count; a copy at zero that should run is brought up."""

from __future__ import annotations

from typing import Any

import pytest
from test_engine import (
    MINUTE,
    REPLICAS,
    T0,
    initialized,
    make_spec,
    observe,
    passing,
    ready,
    rolling,
    set_weight,
    starting,
    step,
)

from tidegate.api import RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import EnsureWorkload, ScaleWorkload, autoscaled_replicas, canary_runs

AUTOSCALER = {"autoscalerRef": {"name": "app"}}


def autoscaled(**overrides: Any) -> RolloutSpec:
    return make_spec(**AUTOSCALER, **overrides)


@pytest.mark.parametrize("chosen", [1, REPLICAS + 4])
def test_the_count_an_hpa_chose_is_not_reset_between_rollouts(chosen: int) -> None:
    spec = autoscaled()
    decision = step(spec, initialized(spec), observe("v1", stable=ready("v1", replicas=chosen)))
    assert decision.actions == ()
    # Without an autoscaler the same observation is drift, healed to the recorded size.
    plain = make_spec()
    healed = step(plain, initialized(plain), observe("v1", stable=ready("v1", replicas=chosen)))
    assert healed.actions == (EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS),)


def test_a_copy_at_zero_is_still_brought_up_at_the_recorded_size() -> None:
    spec = autoscaled()
    decision = step(spec, initialized(spec), observe("v1", stable=ready("v1", replicas=0)))
    assert decision.actions == (EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS),)


def test_adoption_waits_for_the_stable_copy_at_whatever_count_its_hpa_chose() -> None:
    spec = autoscaled()
    first = step(spec, RolloutStatus(), observe("v1"))
    assert EnsureWorkload(role="stable", revision="v1", replicas=REPLICAS) in first.actions
    scaled_up = observe("v1", stable=ready("v1", replicas=REPLICAS + 2))
    assert step(spec, first.status, scaled_up).status.phase is RolloutPhase.INITIALIZED
    not_ready = observe("v1", stable=starting("v1", replicas=REPLICAS + 2))
    assert step(spec, first.status, not_ready).status.phase is RolloutPhase.INITIALIZING


def test_a_canary_left_at_zero_starts_at_the_recorded_size() -> None:
    spec = autoscaled()
    decision = step(
        spec, initialized(spec), observe("v2", stable=ready("v1"), canary=ready("v1", replicas=0))
    )
    assert EnsureWorkload(role="canary", revision="v2", replicas=REPLICAS) in decision.actions


def test_a_canary_its_hpa_resized_is_ready_and_not_resized_back() -> None:
    spec = autoscaled()
    started = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    resized = observe("v2", stable=ready("v1", replicas=5), canary=ready("v2", replicas=1))
    routed = step(spec, started.status, resized)
    assert routed.actions == (set_weight(20),)
    assert routed.status.waiting_since == T0  # now waiting for the gateway, not the canary


def test_a_canary_still_rolling_out_at_its_own_count_is_waited_for() -> None:
    spec = autoscaled()
    started = step(spec, initialized(spec), observe("v2", stable=ready("v1")))
    rolling_out = observe("v2", stable=ready("v1"), canary=starting("v2", replicas=5))
    decision = step(spec, started.status, rolling_out)
    assert decision.actions == ()
    assert decision.status.waiting_since == T0


def test_promotion_brings_the_canary_to_the_count_the_stable_hpa_chose() -> None:
    spec = autoscaled(strategy={"canary": {"steps": [{"setWeight": 50}]}})
    status = rolling(spec)
    promoting = step(
        spec,
        status,
        observe(
            "v2",
            now=T0 + MINUTE,
            stable=ready("v1", replicas=7),
            canary=ready("v2"),
            measurements=passing(),
        ),
    )
    assert promoting.status.phase is RolloutPhase.PROMOTING
    # The copy that takes all traffic first runs as many pods as stable does.
    assert EnsureWorkload(role="canary", revision="v2", replicas=7) in promoting.actions
    done = step(
        spec,
        promoting.status,
        observe(
            "v2",
            now=T0 + 2 * MINUTE,
            stable=ready("v1", replicas=7),
            canary=ready("v2", replicas=7),
        ),
    )
    assert done.status.phase is RolloutPhase.SUCCEEDED
    assert ScaleWorkload(role="canary", replicas=0) not in done.actions
    assert not any(isinstance(a, EnsureWorkload) for a in done.actions)


def test_autoscaled_replicas() -> None:
    assert autoscaled_replicas(None, 3) == 3
    assert autoscaled_replicas(ready("v1", replicas=0), 3) == 3
    assert autoscaled_replicas(ready("v1", replicas=9), 3) == 9
    assert autoscaled_replicas(ready("v1", replicas=9), 0) == 0  # scaled away: zero it is


@pytest.mark.parametrize(
    ("phase", "runs"),
    [
        (None, False),
        (RolloutPhase.INITIALIZING, False),
        (RolloutPhase.INITIALIZED, False),
        (RolloutPhase.PROGRESSING, True),
        (RolloutPhase.PAUSED, True),
        (RolloutPhase.PROMOTING, True),
        (RolloutPhase.SUCCEEDED, False),
        (RolloutPhase.FAILED, False),
        (RolloutPhase.ABORTED, False),
        (RolloutPhase.CANCELLED, False),
    ],
)
def test_the_canary_runs_only_while_a_rollout_is_under_way(
    phase: RolloutPhase | None, runs: bool
) -> None:
    assert canary_runs(RolloutStatus(phase=phase)) is runs
