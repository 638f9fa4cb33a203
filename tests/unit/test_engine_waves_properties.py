"""Waves, by property: whatever region a does (and whatever happens here meanwhile), a release
with `waves.after: [a]` takes no traffic here until a has had that very release stable for
the soak, and never starts once a rolled it back or went back from it (an undo); with
revertOnUpstreamRollback, a release a rejected does not stay stable here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_engine_properties import REPLICAS, T0, World

from tidegate.api import (
    ABORT_ANNOTATION,
    UNDO_ANNOTATION,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
)
from tidegate.engine import (
    Decision,
    EnsureWorkload,
    Observation,
    RestoreTarget,
    SetTraffic,
    WorkloadState,
    reconcile,
)
from tidegate.waves import RegionRead, RemoteRollout

SOAK = timedelta(seconds=60)
RUNNING = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)


def release(revision: str) -> str:
    return f"template:{revision}"


def spec_with_waves(steps: list[dict[str, Any]], **waves: Any) -> RolloutSpec:
    region = {"cluster": "a", "kubeconfigSecretRef": {"name": "a"}, "rollout": "shop"}
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "shop"},
            "service": {"name": "shop", "port": 80},
            "strategy": {"canary": {"steps": steps}},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}},
            "waves": {"after": [{**region, "soak": "60s"}], **waves},
            "rollbackWindow": {"revisions": 2},
        }
    )


@dataclass
class Region:
    """Region a's rollout: what it reports for which release, and since when."""

    state: str = "unreachable"
    revision: str = "v1"
    since: datetime = T0

    def read(self) -> RegionRead:
        rel = release(self.revision)
        if self.state == "unreachable":
            return RegionRead(False, error="connection refused")
        if self.state == "missing":
            return RegionRead(True, None)
        rollout = {
            "rolling": RemoteRollout("Progressing", release("v1"), rel, None),
            "stable": RemoteRollout("Succeeded", rel, None, self.since),
            "failed": RemoteRollout("Failed", release("v1"), rel, None),
            # went back from the release at once (an undo there)
            "undone": RemoteRollout("Succeeded", release("v1"), None, self.since, rel),
        }[self.state]
        return RegionRead(True, rollout)


@dataclass
class WavesWorld(World):
    region: Region = field(default_factory=Region)

    def observe_waves(self) -> Observation:
        return replace(
            self.observe(),
            target_release=release(self.target),
            regions={"a": self.region.read()},
        )

    def apply(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, RestoreTarget):  # an undo gives the target the template
                self.target = action.revision
        super().apply(decision)


def rejected_by_a(read: RegionRead, rel: str) -> bool:
    """Whether region a, as read, rolled `rel` back or went back from it."""
    remote = read.rollout
    if remote is None:
        return False
    rolled_back = remote.phase in ("Failed", "Aborted") and remote.canary_release == rel
    went_back = remote.rejected_release == rel and remote.stable_release != rel
    return rolled_back or went_back


events = st.one_of(
    *[st.tuples(st.just("tick"), st.integers(0, 90))] * 4,
    *[st.tuples(st.just("settle"), st.just(None))] * 3,
    st.tuples(st.just("revision"), st.sampled_from(["v1", "v2", "v3"])),
    st.tuples(
        st.just("region"),
        st.tuples(
            st.sampled_from(["unreachable", "missing", "rolling", "stable", "failed", "undone"]),
            st.sampled_from(["v1", "v2", "v3"]),
        ),
    ),
    st.tuples(st.just("abort"), st.just(None)),
    st.tuples(st.just("undo"), st.just(None)),
)


@settings(max_examples=300, deadline=None)
@given(
    weights=st.lists(st.integers(1, 100), min_size=1, max_size=3, unique=True),
    script=st.lists(events, min_size=5, max_size=80),
)
def test_no_traffic_moves_before_the_region_before_proved_the_release(
    weights: list[int], script: list[tuple[str, Any]]
) -> None:
    spec = spec_with_waves([{"setWeight": w} for w in sorted(weights)])
    world = WavesWorld()
    status = RolloutStatus()
    for kind, arg in script:
        if kind == "region":
            state, revision = arg
            world.region = Region(state, revision, world.now)
        elif kind == "abort":
            world.requests[ABORT_ANNOTATION] = "alice"
        elif kind == "undo":
            world.requests[UNDO_ANNOTATION] = "alice"
        else:
            world.happen(kind, arg)
        obs = world.observe_waves()
        read = obs.regions["a"]
        was_running = status.phase in RUNNING
        decision = reconcile(spec, status, obs)
        new = decision.status
        starts = new.phase in RUNNING and (
            not was_running or new.canary_revision != status.canary_revision
        )
        if starts and new.canary_revision != new.stable_revision:
            # A release starts here only once a has had that release stable for the soak.
            remote = read.rollout
            assert read.reachable and remote is not None
            assert remote.stable_release == new.canary_release
            assert remote.stable_since is not None and obs.now >= remote.stable_since + SOAK
        for action in decision.actions:
            if isinstance(action, SetTraffic) and action.traffic.canary_weight > 0:
                assert new.phase in RUNNING
            if isinstance(action, EnsureWorkload) and action.role == "canary":
                assert new.phase in RUNNING
        if new.phase is RolloutPhase.WAITING_FOR_WAVE:
            assert new.canary_weight == 0 and new.canary_release == release(world.target)
            wave = new.condition("Wave")
            assert wave is not None and wave.status == "False" and wave.message
        if (
            rejected_by_a(read, release(world.target))
            and status.phase is RolloutPhase.WAITING_FOR_WAVE
            and status.canary_revision == world.target
        ):
            # A release a rolled back, or went back from, never starts here.
            assert new.phase not in RUNNING
        if new.rejected_release is not None:
            # Published only while it is neither stable nor tried here.
            assert new.rejected_release not in (new.stable_release, new.canary_release)
        world.apply(decision)
        status = new


@settings(max_examples=200, deadline=None)
@given(script=st.lists(events, min_size=5, max_size=80))
def test_a_release_a_rejected_does_not_stay_stable_here_with_revert_on_upstream_rollback(
    script: list[tuple[str, Any]],
) -> None:
    spec = spec_with_waves([{"setWeight": 50}], revertOnUpstreamRollback=True)
    # v2 promoted here over v1, whose copy the window keeps at zero replicas.
    world = WavesWorld(
        target="v2",
        copies={"v1": WorkloadState("v1", 0, True), "v2": WorkloadState("v2", REPLICAS, True)},
        roles={"stable": "v2", "canary": None},
        retiring=["v1"],
        selects={"stable": "v2", "canary": "v2"},
    )
    world.region = Region("stable", "v2", T0)
    status = RolloutStatus(
        phase=RolloutPhase.SUCCEEDED,
        stable_revision="v2",
        stable_release=release("v2"),
        stable_since=T0,
        previous_stable_revision="v1",
        previous_stable_release=release("v1"),
        stable_history=["v1"],
        retiring=["v1"],
        replicas=REPLICAS,
    )
    for kind, arg in script:
        if kind == "region":
            state, revision = arg
            world.region = Region(state, revision, world.now)
        elif kind in ("abort", "undo"):
            world.requests[ABORT_ANNOTATION if kind == "abort" else UNDO_ANNOTATION] = "alice"
        else:
            world.happen(kind, arg)
        obs = world.observe_waves()
        decision = reconcile(spec, status, obs)
        new = decision.status
        stable = status.stable_release
        if (
            status.phase is RolloutPhase.SUCCEEDED
            and stable is not None
            and status.previous_stable_revision not in (None, status.stable_revision)
            and rejected_by_a(obs.regions["a"], stable)
            and not obs.requests
            and not spec.paused
        ):
            # Gone back at once: the release before is stable, and no step moved traffic.
            event("a rejected the release stable here")
            assert new.phase is RolloutPhase.FAILED
            assert new.stable_revision == status.previous_stable_revision
            assert new.canary_release == stable
            assert not any(
                isinstance(a, SetTraffic) and a.traffic.canary_weight > 0 for a in decision.actions
            )
        world.apply(decision)
        status = new
