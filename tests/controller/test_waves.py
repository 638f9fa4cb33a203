"""spec.waves through the reconciler: the regions are read through the port for every
reconcile of a rollout with waves (and released when it goes), the release is computed from
the target as spec.waves.release says, the metrics of a region before this one are resolved
and measured against its Prometheus, and a target that does not say its release is a
problem reported on the rollout."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fakes import NAME, NAMESPACE, World, example_spec
from test_reconciler import reconciler, settle, until_idle

from tidegate.revisions import template_revision
from tidegate.waves import RegionRead, RemoteRollout

KEY = (NAMESPACE, NAME)


def waves_world(**waves: Any) -> World:
    spec = example_spec()
    region = {"cluster": "a", "kubeconfigSecretRef": {"name": "a-reader"}, "rollout": "shop"}
    region.update(waves.pop("region", {}))
    spec["waves"] = {"after": [region], **waves}
    world = World()
    world.add_target()
    world.add_rollout(spec)
    return world


def release_of(world: World, version: str) -> str:
    return f"template:{world.revision_of(version)}"


async def test_a_release_waits_for_the_region_then_rolls_out() -> None:
    world = waves_world(region={"soak": "1m"})
    await settle(world, {"Initialized"})
    await until_idle(world)
    assert world.target is not None
    first = template_revision(world.target["spec"]["template"])
    assert world.status["stableRelease"] == f"template:{first}"
    world.set_version("1.1.0")
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "WaitingForWave"
    assert ("read_regions", KEY, ("a",)) in world.calls
    wave = world.condition("Wave")
    assert wave is not None and wave["reason"] == "Unreachable"
    assert world.canary_weight == 0
    release = release_of(world, "1.1.0")
    since = world.now
    world.regions["a"] = RegionRead(True, RemoteRollout("Succeeded", release, None, since))
    delay = await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "WaitingForWave"
    assert world.status["waves"]["regions"][0]["reason"] == "Soaking"
    assert delay == 60
    world.advance(60)
    await settle(world, {"Succeeded"}, rec)
    assert world.status["stableRelease"] == release
    assert [e[1] for e in world.events()].count("WaveReady") == 1


async def test_a_region_rejecting_the_release_fails_it_here() -> None:
    world = waves_world()
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    world.regions["a"] = RegionRead(
        True, RemoteRollout("Failed", None, release_of(world, "1.1.0"), None)
    )
    await settle(world, {"Failed"})
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "RejectedUpstream"
    assert not any(c[0] == "ensure" and c[1] == "canary" for c in world.calls)


async def test_the_regions_metrics_are_resolved_and_measured_at_its_prometheus() -> None:
    metric = {"name": "errors", "query": 'e{cluster="a",svc="{{ canaryService }}"}',
              "thresholdRange": {"max": 0.01}}  # fmt: skip
    world = waves_world(
        region={"metrics": [metric], "prometheus": {"address": "http://prometheus.a:9090"}}
    )
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    world.regions["a"] = RegionRead(
        True, RemoteRollout("Succeeded", release_of(world, "1.1.0"), None, world.now)
    )
    world.metric_value = 0.5
    rec = reconciler(world)
    for _ in range(3):
        await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "WaitingForWave"
    assert world.status["waves"]["regions"][0]["reason"] == "MetricsFailing"
    asked = [c for c in world.calls if c[0] == "measure_all"]
    assert asked and asked[0][1] == "http://prometheus.a:9090"
    assert world.queries[0]["errors"][0] == metric["query"]
    assert asked[0][2]["canaryService"] == "shop-canary"  # filled in by the adapter
    world.metric_value = 0.0
    world.advance(timedelta(minutes=1).total_seconds())
    await settle(world, {"Progressing", "Succeeded"}, rec)


async def test_a_target_without_its_release_annotation_is_reported() -> None:
    world = waves_world(release="annotation:example.com/release")
    await reconciler(world).reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "ReleaseUnknown"
    assert "example.com/release" in degraded["message"]


async def test_a_deleted_rollout_reads_no_region() -> None:
    world = waves_world()
    await settle(world, {"Initialized"})
    world.rollout = None
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.regions_forgotten == [KEY]


async def test_a_release_starts_only_once_a_fresh_read_confirms_the_watch() -> None:
    world = waves_world()
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    ready = RegionRead(
        True, RemoteRollout("Succeeded", release_of(world, "1.1.0"), None, world.now)
    )
    world.regions["a"] = ready  # what the watch still says ...
    world.regions_now["a"] = RegionRead(False, error="connection refused")  # ... and now
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert ("confirm_regions", ("a",)) in world.calls
    assert world.status["phase"] == "WaitingForWave"
    wave = world.condition("Wave")
    assert wave is not None and wave["reason"] == "Unreachable"
    assert "connection refused" in wave["message"]
    assert not any(c[0] == "ensure" and c[1] == "canary" for c in world.calls)
    del world.regions_now["a"]  # back: the same watch and fresh read let it start
    await settle(world, {"Progressing"}, rec)
    assert [c for c in world.calls if c[0] == "confirm_regions"] == [
        ("confirm_regions", ("a",))
    ] * 2


async def test_an_undo_upstream_is_followed_with_the_copy_the_window_keeps() -> None:
    world = waves_world(revertOnUpstreamRollback=True)
    assert world.rollout is not None
    world.rollout["spec"]["rollbackWindow"] = {"revisions": 1}
    await settle(world, {"Initialized"})
    await until_idle(world)
    old, new = world.revision_of("1.0.0"), world.revision_of("1.1.0")
    world.regions["a"] = RegionRead(
        True, RemoteRollout("Succeeded", release_of(world, "1.1.0"), None, world.now)
    )
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"})
    await until_idle(world)
    assert world.by_revision[old].replicas == 0  # kept at zero by the window
    # Region a undoes 1.1.0: it serves 1.0.0 again and publishes 1.1.0 as rejected.
    world.regions["a"] = RegionRead(
        True,
        RemoteRollout(
            "Succeeded",
            release_of(world, "1.0.0"),
            None,
            world.now,
            rejected_release=release_of(world, "1.1.0"),
        ),
    )
    started = len(world.calls)
    await until_idle(world)
    status = world.status
    assert (status["phase"], status["stableRevision"]) == ("Failed", old)
    assert status["canaryRelease"] == release_of(world, "1.1.0")  # what b's regions read
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "RevertedWithUpstream"
    # The kept copy is scaled back up and selected; no step, no new copy, target untouched.
    assert ("ensure", "stable", old, 3) in world.calls[started:]
    assert world.selects["stable"] == old and world.by_revision[old].replicas == 3
    assert world.canary_weight == 0
    assert world.target is not None
    assert template_revision(world.target["spec"]["template"]) == new
    reasons = [r for _, r, _ in world.events()]
    assert reasons.count("RevertedWithUpstream") == 1
    assert reasons.count("RolloutStarted") == 1 and "RolledBackFast" not in reasons


async def test_an_undo_upstream_during_the_rollout_is_followed_after_the_promotion() -> None:
    world = waves_world(revertOnUpstreamRollback=True)
    await settle(world, {"Initialized"})
    await until_idle(world)
    old = world.revision_of("1.0.0")
    world.regions["a"] = RegionRead(
        True, RemoteRollout("Succeeded", release_of(world, "1.1.0"), None, world.now)
    )
    world.set_version("1.1.0")
    rec = reconciler(world)
    await settle(world, {"Progressing"}, rec)
    world.regions["a"] = RegionRead(
        True,
        RemoteRollout(
            "Succeeded",
            release_of(world, "1.0.0"),
            None,
            world.now,
            rejected_release=release_of(world, "1.1.0"),
        ),
    )
    # No change of region a wakes it again: the passes the rollout makes on its own do.
    await until_idle(world, rec)
    reasons = [r for _, r, _ in world.events()]
    assert reasons.index("Promoted") < reasons.index("RevertedWithUpstream")
    assert (world.status["phase"], world.status["stableRevision"]) == ("Failed", old)
    assert world.selects["stable"] == old, (world.by_revision, world.status, world.calls[-30:])
