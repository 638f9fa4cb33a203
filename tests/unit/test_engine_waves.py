"""spec.waves in the engine: a release waits for the regions before this one, is never started
after one of them rolled it back, and (revertOnLaterFailure) is reverted when a later region
rejects it."""

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from test_engine import (
    MINUTE,
    T0,
    condition,
    events,
    make_spec,
    observe,
    ready,
    step,
    weights,
)

from tidegate.analysis import Measurement
from tidegate.api import ABORT_ANNOTATION, RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import (
    Decision,
    EnsureWorkload,
    Observation,
    ScaleWorkload,
    SetTraffic,
    wave_measurements_due,
)
from tidegate.waves import RegionRead, RemoteRollout, judge_after

R1, R2 = "template:r1", "template:r2"


def waves(**extra: Any) -> dict[str, Any]:
    region = {
        "cluster": "a",
        "kubeconfigSecretRef": {"name": "a-reader"},
        "rollout": "app",
        "soak": "10m",
    }
    region.update(extra.pop("region", {}))
    return {"after": [region], **extra}


def spec_with(**extra: Any) -> RolloutSpec:
    return make_spec(waves=waves(**extra))


def region(
    phase: str, stable: str | None, canary: str | None = None, since: datetime | None = None
) -> dict[str, RegionRead]:
    return {"a": RegionRead(True, RemoteRollout(phase, stable, canary, since))}


UNREACHABLE = {"a": RegionRead(False, error="connection refused")}


def at(target: str, now: datetime = T0, **extra: Any) -> Observation:
    release = R2 if target == "v2" else R1
    extra.setdefault("stable", ready("v1"))
    return observe(target, now=now, target_release=release, **extra)


def initialized(spec: RolloutSpec) -> RolloutStatus:
    first = step(spec, RolloutStatus(), at("v1", stable=None))
    return step(spec, first.status, at("v1")).status


def no_traffic_moved(decision: Decision) -> bool:
    return not any(
        (isinstance(a, SetTraffic) and a.traffic.canary_weight > 0)
        or (isinstance(a, EnsureWorkload) and a.role == "canary")
        for a in decision.actions
    )


def test_a_new_release_waits_and_says_for_which_region_and_why() -> None:
    spec = spec_with()
    status = initialized(spec)
    assert (status.stable_release, status.stable_since) == (R1, T0)
    waiting = step(spec, status, at("v2", regions=region("Progressing", R1, R2)))
    st = waiting.status
    assert st.phase is RolloutPhase.WAITING_FOR_WAVE
    assert no_traffic_moved(waiting)
    assert (st.canary_revision, st.canary_release) == ("v2", R2)
    assert st.waves is not None and st.waves.release == R2
    assert st.waves.regions[0].reason == "RollingOut"
    wave = st.condition("Wave")
    assert wave is not None and wave.status == "False" and wave.reason == "RollingOut"
    assert "region a" in wave.message and "not yet rolled out" in wave.message
    assert waiting.requeue_after is None  # the region's watch wakes it


def test_soak_counts_from_when_the_region_made_the_release_stable() -> None:
    spec = spec_with()
    done_at = T0 + MINUTE
    status = initialized(spec)
    soaking = step(
        spec, status, at("v2", now=T0 + 5 * MINUTE, regions=region("Succeeded", R2, None, done_at))
    )
    st = soaking.status
    assert st.phase is RolloutPhase.WAITING_FOR_WAVE
    assert st.waves is not None and st.waves.regions[0].reason == "Soaking"
    assert "soaking: 6m0s of 10m left" in st.message
    assert soaking.requeue_after == (done_at + 10 * MINUTE - (T0 + 5 * MINUTE)).total_seconds()
    assert no_traffic_moved(soaking)
    started = step(
        spec,
        st,
        at("v2", now=done_at + 10 * MINUTE, regions=region("Succeeded", R2, None, done_at)),
    )
    assert started.status.phase is RolloutPhase.PROGRESSING
    assert events(started)[:2] == ["WaveReady", "RolloutStarted"]
    assert condition(started.status, "Wave") == "True"
    assert started.status.canary_release == R2


def test_a_release_rolled_back_upstream_is_never_started_here() -> None:
    spec = spec_with()
    failed = step(spec, initialized(spec), at("v2", regions=region("Failed", R1, R2)))
    st = failed.status
    assert st.phase is RolloutPhase.FAILED
    assert no_traffic_moved(failed)
    assert "RejectedUpstream" in events(failed)
    assert condition(st, "Degraded") == "True"
    degraded = st.condition("Degraded")
    assert degraded is not None and degraded.reason == "RejectedUpstream"
    assert "Region a rolled release template:r2 back" in st.message
    # And it stays so: the same target is not tried again.
    again = step(spec, st, at("v2", now=T0 + MINUTE, regions=region("Failed", R1, R2)))
    assert again.status.phase is RolloutPhase.FAILED and no_traffic_moved(again)


def test_an_unreachable_region_is_a_wait_never_a_pass() -> None:
    spec = spec_with(region={"soak": "0s"})
    waiting = step(spec, initialized(spec), at("v2", regions=UNREACHABLE))
    st = waiting.status
    assert st.phase is RolloutPhase.WAITING_FOR_WAVE
    wave = st.condition("Wave")
    assert wave is not None and wave.reason == "Unreachable"
    assert "connection refused" in wave.message
    back = step(spec, st, at("v2", now=T0 + MINUTE, regions=region("Succeeded", R2, None, T0)))
    assert back.status.phase is RolloutPhase.PROGRESSING


def test_waves_timeout_turns_a_long_wait_into_a_failure() -> None:
    spec = spec_with(timeout="30m")
    waiting = step(spec, initialized(spec), at("v2", regions=UNREACHABLE))
    assert waiting.requeue_after == 30 * 60
    late = step(spec, waiting.status, at("v2", now=T0 + 30 * MINUTE, regions=UNREACHABLE))
    assert late.status.phase is RolloutPhase.FAILED
    assert "WaveTimeout" in events(late) and no_traffic_moved(late)


def test_a_newer_release_mid_rollout_ends_the_canary_and_waits() -> None:
    spec = spec_with(region={"soak": "0s"})
    ok = region("Succeeded", R2, None, T0)
    started = step(spec, initialized(spec), at("v2", regions=ok))
    assert started.status.phase is RolloutPhase.PROGRESSING
    with_canary = at("v2", regions=ok, canary=ready("v2"))
    routed = step(spec, started.status, with_canary)
    assert weights(routed) == [20]
    newer = step(
        spec,
        routed.status,
        replace(
            observe("v3", stable=ready("v1"), canary=ready("v2"), target_release="template:r3"),
            regions=ok,
        ),
    )
    assert newer.status.phase is RolloutPhase.WAITING_FOR_WAVE
    assert weights(newer) == [0] and ScaleWorkload("canary", 0) not in newer.actions
    assert newer.status.canary_release == "template:r3"


def test_metrics_in_the_region_before_must_pass() -> None:
    metric = {"name": "errors", "query": "q", "thresholdRange": {"max": 0.01}}
    spec = spec_with(region={"soak": "0s", "metrics": [metric]})
    ok = region("Succeeded", R2, None, T0)
    pending = step(spec, initialized(spec), at("v2", regions=ok))
    assert pending.status.phase is RolloutPhase.WAITING_FOR_WAVE
    assert wave_measurements_due(spec, pending.status, T0) == ("a",)
    failing = step(
        spec,
        pending.status,
        at("v2", regions=ok, wave_measurements={"a": (Measurement("errors", 0.5),)}),
    )
    assert failing.status.phase is RolloutPhase.WAITING_FOR_WAVE
    assert failing.status.waves.regions[0].reason == "MetricsFailing"  # type: ignore[union-attr]
    assert failing.requeue_after == 60  # measured again at the analysis interval
    assert wave_measurements_due(spec, failing.status, T0 + 30 * timedelta(seconds=1)) == ()
    passing = step(
        spec,
        failing.status,
        at(
            "v2",
            now=T0 + MINUTE,
            regions=ok,
            wave_measurements={"a": (Measurement("errors", 0.001),)},
        ),
    )
    assert passing.status.phase is RolloutPhase.PROGRESSING


def test_abort_while_waiting_keeps_the_release_from_starting() -> None:
    spec = spec_with()
    waiting = step(spec, initialized(spec), at("v2", regions=UNREACHABLE))
    aborted = step(
        spec, waiting.status, at("v2", regions=UNREACHABLE, requests={ABORT_ANNOTATION: "me"})
    )
    assert aborted.status.phase is RolloutPhase.ABORTED
    later = step(spec, aborted.status, at("v2", regions=region("Succeeded", R2, None, T0)))
    assert later.status.phase is RolloutPhase.ABORTED and no_traffic_moved(later)


def promoted(spec: RolloutSpec) -> RolloutStatus:
    """v2 promoted after v1 (no regions before this one)."""
    status = initialized(spec)
    status = status.model_copy(
        update={
            "phase": RolloutPhase.SUCCEEDED,
            "stable_revision": "v2",
            "stable_release": R2,
            "previous_stable_revision": "v1",
            "previous_stable_release": R1,
        }
    )
    return status


def test_promotion_keeps_the_release_before() -> None:
    spec = make_spec(steps=[{"setWeight": 50}], metrics=False)
    decision = step(spec, initialized(spec), at("v2"))
    now = T0
    for minute in range(8):
        if decision.status.phase is RolloutPhase.SUCCEEDED:
            break
        stable = "v2" if decision.status.phase is RolloutPhase.PROMOTING else "v1"
        now = T0 + minute * MINUTE
        observed = at("v2", now=now, stable=ready(stable), canary=ready("v2"))
        decision = step(spec, decision.status, observed)
    st = decision.status
    assert st.phase is RolloutPhase.SUCCEEDED
    assert (st.stable_revision, st.stable_release) == ("v2", R2)
    assert (st.previous_stable_revision, st.previous_stable_release) == ("v1", R1)
    assert st.stable_since == now


def test_a_release_rejected_by_a_later_region_is_reverted_here() -> None:
    later = {"cluster": "b", "kubeconfigSecretRef": {"name": "b-reader"}, "rollout": "app"}
    spec = make_spec(waves={"before": [later], "revertOnLaterFailure": True})
    status = promoted(spec)
    fine = {"b": RegionRead(True, RemoteRollout("Progressing", R1, R2, None))}
    same = step(spec, status, at("v2", stable=ready("v2"), regions=fine))
    assert same.status.phase is RolloutPhase.SUCCEEDED and same.actions == ()
    rejected = {"b": RegionRead(True, RemoteRollout("Failed", R1, R2, None))}
    reverted = step(spec, status, at("v2", stable=ready("v2"), regions=rejected))
    st = reverted.status
    assert st.phase is RolloutPhase.FAILED
    assert (st.stable_revision, st.stable_release) == ("v1", R1)
    assert (st.canary_revision, st.canary_release) == ("v2", R2)
    assert EnsureWorkload(role="stable", revision="v1", replicas=3) in reverted.actions
    assert weights(reverted) == [0]
    assert "RevertedOnLaterFailure" in events(reverted)
    # Once back, nothing more happens: the target (still v2) is the release that failed.
    settled = step(spec, st, at("v2", stable=ready("v1"), regions=rejected))
    assert settled.status.phase is RolloutPhase.FAILED
    assert not any(isinstance(a, EnsureWorkload) for a in settled.actions)
    # Without revertOnLaterFailure, a later region's failure changes nothing here.
    off = make_spec(waves={"before": [later]})
    kept = step(off, promoted(off), at("v2", stable=ready("v2"), regions=rejected))
    assert kept.status.phase is RolloutPhase.SUCCEEDED


def test_judge_after_orders_reasons() -> None:
    spec = spec_with()
    assert spec.waves is not None
    regions = spec.waves.after

    def reason(read: dict[str, RegionRead], release: str = R2) -> str:
        gate = judge_after(regions, read, release, [], {}, T0, MINUTE)
        return gate.regions[0].reason

    assert reason({}) == "Unreachable"
    assert reason({"a": RegionRead(True, None)}) == "NotFound"
    assert reason(region("Succeeded", R1)) == "NotRolledOut"
    assert reason(region("WaitingForWave", R1, R2)) == "RollingOut"
    assert reason(region("Aborted", R1, R2)) == "Rejected"
    assert reason(region("Failed", R1, "template:other")) == "NotRolledOut"
    assert reason(region("Succeeded", R2, None, T0 - 10 * MINUTE)) == "Ready"
    assert reason(region("Progressing", R2, "template:r3", T0 - 11 * MINUTE)) == "Ready"
    assert reason(region("Succeeded", R2, None, None)) == "Soaking"
