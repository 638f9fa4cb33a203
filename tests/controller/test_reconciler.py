"""The reconcile loop against recording fakes of its ports, in fake time."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection

import pytest
from fakes import NAME, NAMESPACE, Killed, World, bump_version, example_spec

from tidegate import api, metrics
from tidegate.api import PROMOTE_ANNOTATION
from tidegate.plan import Traffic
from tidegate.ports import (
    CLAIM_ANNOTATION,
    HAND_BACK_FINALIZER,
    AdapterError,
    RoutingError,
    WorkloadError,
)
from tidegate.reconciler import Reconciler, backoff
from tidegate.revisions import template_revision

PROMETHEUS = "http://prometheus.test:9090"


def reconciler(world: World, prometheus: str | None = PROMETHEUS) -> Reconciler:
    return Reconciler(world.ports(), prometheus, clock=world.clock)


async def settle(
    world: World, phases: Collection[str], rec: Reconciler | None = None, passes: int = 50
) -> float | None:
    """Reconcile, moving the clock on by what each pass asks, until the phase is one of
    `phases`; the last pass's requeue delay."""
    rec = rec or reconciler(world)
    for _ in range(passes):
        delay = await rec.reconcile(NAMESPACE, NAME)
        if world.status.get("phase") in phases:
            return delay
        world.wait(delay)
    raise AssertionError(f"never reached {phases}; status: {world.status}")


async def until_idle(world: World, rec: Reconciler | None = None, passes: int = 50) -> None:
    """Reconcile, moving the clock on by what each pass asks, until a pass asks for no timer
    and changed nothing watched (whose event would wake it): what waits for a delay (a copy
    scaled away after the traffic left it) is done."""
    rec = rec or reconciler(world)
    for _ in range(passes):
        changes = world.changes
        delay = await rec.reconcile(NAMESPACE, NAME)
        if delay is None and world.changes == changes:
            return
        world.advance(delay or 0)
    raise AssertionError(f"never idle; status: {world.status}")


def adopted_world(**world_options: object) -> World:
    world = World(**world_options)  # type: ignore[arg-type]
    world.add_target()
    world.add_rollout()
    return world


async def initialized_world() -> World:
    world = adopted_world()
    await settle(world, {"Initialized"})
    await until_idle(world)  # the target scaled away
    world.calls.clear()
    return world


async def test_adopts_the_target_then_releases_it() -> None:
    world = adopted_world()
    await settle(world, {"Initialized"})
    # Not while the gateway may still send requests to it: after the scale-down delay.
    assert "release_target" not in world.names()
    await until_idle(world)
    stable_revision = world.revision_of("1.0.0")
    assert ("ensure", "stable", stable_revision, 3) in world.calls
    assert world.services == {"stable", "canary"}
    assert world.status["stableRevision"] == stable_revision
    assert world.canary_weight == 0
    # The user's Deployment is scaled to zero only once the stable copy serves.
    assert "release_target" in world.names()
    assert world.names().index("release_target") > world.names().index("ensure")
    assert world.target is not None and world.target["spec"]["replicas"] == 0


async def test_a_released_target_is_not_released_again() -> None:
    world = await initialized_world()
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert "release_target" not in world.names()


async def test_an_idle_rollout_writes_nothing() -> None:
    world = await initialized_world()
    status_before = world.status
    delay = await reconciler(world).reconcile(NAMESPACE, NAME)
    assert delay is None
    writes = {"patch_status", "ensure", "scale", "release_target", "post_event"}
    assert not writes & set(world.names()), world.calls
    assert world.status == status_before
    assert "measure_all" not in world.names()


async def test_a_healthy_canary_walks_every_step_and_is_promoted() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    weights: list[int] = []
    rec = reconciler(world)
    for _ in range(200):
        delay = await rec.reconcile(NAMESPACE, NAME)
        if not weights or weights[-1] != world.canary_weight:
            weights.append(world.canary_weight)
        if world.status.get("phase") == "Succeeded":
            break
        world.wait(delay)
    assert world.status.get("phase") == "Succeeded", world.status
    assert weights == [0, 10, 30, 60, 0]
    assert world.status["stableRevision"] == world.revision_of("1.1.0")
    new, old = world.revision_of("1.1.0"), world.revision_of("1.0.0")
    # The pointer flip: the copy that was analysed is stable, no other copy was made.
    assert world.copies["stable"].revision == new
    assert world.selects == {"stable": new, "canary": new}
    assert set(world.by_revision) == {old, new}
    # The stable copy before keeps its pods until the gateway has moved the traffic and the
    # delay is over; then it goes.
    assert world.by_revision[old].replicas == 3
    await until_idle(world, rec)
    assert set(world.by_revision) == {new} and world.status["retiring"] == []
    # Every analysed step asked Prometheus, with the canary's own Service in the query.
    queries = [c for c in world.calls if c[0] == "measure_all"]
    assert queries and all(c[1] == PROMETHEUS for c in queries)
    assert {c[2]["canaryService"] for c in queries} == {"shop-canary"}
    assert {c[2]["namespace"] for c in queries} == {NAMESPACE}
    # Exactly the variables the API documents, no more and no fewer.
    assert all(set(c[2]) == set(api.QUERY_VARIABLES) for c in queries)
    assert ("Normal", "Promoted") in {(t, r) for t, r, _ in world.events()}


def _step_latencies() -> float:
    value = metrics.REGISTRY.get_sample_value("tidegate_step_latency_seconds_count")
    return value or 0.0


async def test_each_step_taken_on_a_passing_analysis_is_timed() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    before = _step_latencies()
    await settle(world, {"Succeeded"})
    # 10% needs no analysis; 30% and 60% each follow a passing one. The promotion waits
    # for the stable copy to run the new revision, not for an analysis.
    assert _step_latencies() - before == 2


async def test_a_failing_analysis_is_not_a_step_latency() -> None:
    world = await initialized_world()
    world.metric_value = 0.5
    world.set_version("1.2.0")
    before = _step_latencies()
    await settle(world, {"Failed"})
    assert _step_latencies() == before


async def test_a_failing_canary_is_rolled_back_to_zero() -> None:
    world = await initialized_world()
    world.metric_value = 0.5  # over both thresholds
    world.set_version("1.2.0")
    await settle(world, {"Failed"})
    assert world.canary_weight == 0
    await until_idle(world)
    assert world.copies["canary"].replicas == 0
    assert world.status["stableRevision"] == world.revision_of("1.0.0")
    assert any(t == "Warning" for t, _, _ in world.events())


async def test_no_prometheus_address_is_a_failed_measurement_never_a_pass() -> None:
    world = adopted_world()
    rec = reconciler(world, prometheus=None)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    await settle(world, {"Failed"}, rec)
    assert "measure_all" not in world.names()
    messages = [m["message"] for m in world.status["metrics"]]
    assert messages and all("no Prometheus address" in m for m in messages)


async def queries_of_a_rollout(prometheus: dict[str, object]) -> list[tuple[object, ...]]:
    """The metrics port's calls while a rollout with this `analysis.prometheus` is promoted."""
    spec = example_spec()
    spec["analysis"]["prometheus"] = prometheus
    world = World()
    world.add_target()
    world.add_rollout(spec)
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"})
    return [c for c in world.calls if c[0] == "measure_all"]


async def test_the_rollouts_own_prometheus_address_wins() -> None:
    queries = await queries_of_a_rollout({"address": "http://other.test:9090"})
    assert {c[1] for c in queries} == {"http://other.test:9090"}
    assert {c[3] for c in queries} == {True}  # TLS verified


async def test_tls_verification_is_skipped_only_when_the_rollout_says_so() -> None:
    queries = await queries_of_a_rollout({"address": "https://p.test", "insecureSkipVerify": True})
    assert queries and {c[3] for c in queries} == {False}


async def test_status_is_written_before_any_action() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    actions = {"ensure", "scale", "set_traffic", "post_event", "remove_annotation"}
    for _ in range(100):
        world.calls.clear()
        delay = await rec.reconcile(NAMESPACE, NAME)
        names = world.names()
        acted = [i for i, n in enumerate(names) if n in actions]
        if acted and "patch_status" in names:
            assert names.index("patch_status") < acted[0], names
        if world.status.get("phase") == "Succeeded":
            return
        world.wait(delay)
    raise AssertionError(f"not promoted: {world.status}")


async def test_an_operator_killed_after_the_status_write_finishes_the_decision() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    # The process dies as it is about to route the first slice to the canary.
    world.kill_when["set_traffic"] = lambda traffic: traffic.canary_weight > 0
    for _ in range(20):
        try:
            await rec.reconcile(NAMESPACE, NAME)
        except Killed:
            break
        world.advance(1)
    else:
        raise AssertionError(f"no weight was ever set: {world.calls}")
    decided = world.status["canaryWeight"]
    assert decided == 10 and world.canary_weight == 0  # decided and stored, not yet routed
    del world.kill_when["set_traffic"]
    # A new operator process: nothing carried over but the stored status.
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.canary_weight == decided
    assert world.status["canaryWeight"] == decided


async def test_a_route_edited_behind_tidegates_back_is_restored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = await initialized_world()
    world.canary_weight = 50  # a hand edit, or a GitOps sync
    with caplog.at_level(logging.WARNING, "tidegate.reconciler"):
        await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.canary_weight == 0
    assert "restored the routes" in caplog.text
    assert "patch_status" not in world.names()


async def test_a_routing_failure_is_degraded_once_then_cleared() -> None:
    world = await initialized_world()
    world.route_exists = False
    rec = reconciler(world)
    assert await rec.reconcile(NAMESPACE, NAME) == backoff(1) == 1
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "RoutingFailed"
    assert "does not exist" in degraded["message"]
    ready = world.condition("Ready")
    assert ready is not None and ready["status"] == "False"
    assert [(t, r) for t, r, _ in world.events()] == [("Warning", "RoutingFailed")]

    # Still broken: reported once, no flapping of the status, no second Event; each retry
    # waits twice as long, up to a minute.
    world.calls.clear()
    delays = []
    for _ in range(8):
        world.advance(60)
        delays.append(await rec.reconcile(NAMESPACE, NAME))
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    assert "patch_status" not in world.names()
    assert world.events() == []
    assert world.condition("Degraded") == degraded

    # Fixed: the route is put back, the condition cleared and the backoff reset.
    world.route_exists = True
    world.calls.clear()
    world.advance(60)
    assert await rec.reconcile(NAMESPACE, NAME) is None
    world.route_exists = False
    assert await rec.reconcile(NAMESPACE, NAME) == 1
    world.route_exists = True
    await rec.reconcile(NAMESPACE, NAME)
    assert world.condition("Degraded") is None or world.condition("Degraded")["status"] != "True"  # type: ignore[index]
    ready = world.condition("Ready")
    assert ready is not None and ready["status"] == "True"


async def test_a_routing_failure_mid_rollout_keeps_the_decided_weight_for_later() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    world.fail["set_traffic"] = RoutingError("the API server said 500")
    rec = reconciler(world)
    for _ in range(10):
        await rec.reconcile(NAMESPACE, NAME)
        if world.status.get("canaryWeight"):
            break
        world.advance(1)
    assert world.status["canaryWeight"] == 10
    assert world.canary_weight == 0
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["message"] == "the API server said 500"
    del world.fail["set_traffic"]
    world.advance(60)
    await rec.reconcile(NAMESPACE, NAME)
    # The route catches up with what is stored; the step did not move on meanwhile, its
    # clock starting only once the route holds its weight.
    assert world.canary_weight == world.status["canaryWeight"] == 10
    assert world.condition("Degraded") is None or world.condition("Degraded")["status"] != "True"  # type: ignore[index]


async def test_a_workload_failure_is_reported_as_such() -> None:
    world = adopted_world()
    world.fail["ensure"] = WorkloadError("quota exceeded")
    assert await reconciler(world).reconcile(NAMESPACE, NAME) == backoff(1)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "WorkloadFailed"
    assert ("Warning", "WorkloadFailed", "quota exceeded") in world.events()
    assert "release_target" not in world.names()


async def test_a_missing_target_is_reported_then_picked_up() -> None:
    world = World()
    world.add_rollout()
    rec = reconciler(world)
    assert await rec.reconcile(NAMESPACE, NAME) == backoff(1)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "TargetNotFound"
    assert f"{NAMESPACE}/shop does not exist" in degraded["message"]
    # Asked again while still missing: nothing new is written or posted.
    world.calls.clear()
    assert await rec.reconcile(NAMESPACE, NAME) == backoff(2)
    assert "patch_status" not in world.names() and world.events() == []
    world.add_target()
    await settle(world, {"Initialized"}, rec)
    assert world.condition("Degraded") is None or world.condition("Degraded")["status"] != "True"  # type: ignore[index]


async def test_an_invalid_spec_is_a_condition_and_an_event_and_nothing_else() -> None:
    world = World()
    world.add_target()
    spec = example_spec()
    spec["analysis"]["interval"] = "soon"
    world.add_rollout(spec)
    assert await reconciler(world).reconcile(NAMESPACE, NAME) is None
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert "analysis.interval" in degraded["message"]
    assert [r for _, r, _ in world.events()] == ["InvalidSpec"]
    assert not {"ensure", "set_traffic", "release_target"} & set(world.names())


async def test_a_deleted_or_deleting_rollout_is_left_alone() -> None:
    world = World()
    assert await reconciler(world).reconcile(NAMESPACE, NAME) is None
    world.add_target()
    world.add_rollout()
    assert world.rollout is not None
    world.rollout["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert await reconciler(world).reconcile(NAMESPACE, NAME) is None
    assert world.names() == ["get_rollout", "get_rollout"]


async def test_a_promote_request_ends_an_indefinite_pause_and_is_cleared() -> None:
    spec = example_spec()
    spec["strategy"] = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}
    world = World()
    world.add_target()
    world.add_rollout(spec)
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Paused"})
    assert world.canary_weight == 20
    assert world.rollout is not None
    world.rollout["metadata"]["annotations"][PROMOTE_ANNOTATION] = "true"
    await settle(world, {"Succeeded"})
    assert ("remove_annotation", PROMOTE_ANNOTATION) in world.calls
    assert PROMOTE_ANNOTATION not in world.rollout["metadata"]["annotations"]


async def test_the_target_moving_on_during_promotion_copies_from_the_canary() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    await settle(world, {"Promoting"})
    promoted = world.revision_of("1.1.0")
    world.set_version("1.3.0")  # the user moved on while 1.1.0 is being promoted
    await settle(world, {"Succeeded", "Progressing"})
    assert world.copies["stable"].revision == promoted


# --- strategies and routes --------------------------------------------------------------------


def blue_green_spec(**strategy: object) -> dict[str, object]:
    spec = example_spec()
    spec["strategy"] = {"blueGreen": {"scaleDownDelaySeconds": 30, **strategy}}
    spec["trafficRouting"] = {"gatewayAPI": {"httpRoute": "shop", "previewHTTPRoute": "preview"}}
    return spec


async def test_a_plan_the_router_cannot_carry_is_an_invalid_spec_naming_the_field() -> None:
    spec = example_spec()
    spec["strategy"] = {
        "canary": {"steps": [{"setWeight": 10}, {"setMirrorRoute": {"percentage": 5}}]}
    }
    world = World(capabilities=frozenset({"switch", "preview"}))  # a Service selector's
    world.add_target()
    world.add_rollout(spec)
    assert await reconciler(world).reconcile(NAMESPACE, NAME) is None
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert "spec.strategy.canary.steps[1].setMirrorRoute" in degraded["message"]
    assert "'mirror'" in degraded["message"]
    assert (
        "spec.strategy.canary: the router spec.trafficRouting.gatewayAPI cannot carry 'weights'"
        in (degraded["message"])
    )
    assert not {"ensure", "set_traffic", "release_target"} & set(world.names())


async def test_blue_green_previews_then_switches_in_one_write_and_ends_on_stable() -> None:
    world = World()
    world.add_target()
    world.add_rollout(blue_green_spec(prePromotionAnalysis={"iterations": 2}))
    await settle(world, {"Initialized"})
    world.calls.clear()
    world.set_version("1.1.0")
    rec = reconciler(world)
    seen: list[tuple[str | None, int, bool]] = []
    for _ in range(300):
        delay = await rec.reconcile(NAMESPACE, NAME)
        route = world.route
        assert route is not None
        if not seen or seen[-1] != (
            world.status.get("currentStepName"),
            route.canary_weight,
            route.preview,
        ):
            seen.append((world.status.get("currentStepName"), route.canary_weight, route.preview))
        if world.status.get("phase") == "Succeeded":
            break
        world.wait(delay)
    assert world.status["phase"] == "Succeeded", world.status
    live_weights = [c[1].canary_weight for c in world.calls if c[0] == "set_traffic"]
    assert set(live_weights) == {0, 100}  # never a split
    switches = [
        i for i, (a, b) in enumerate(itertools.pairwise(live_weights)) if a == 0 and b == 100
    ]
    assert len(switches) == 1
    # Previewed first, then switched, then blue kept up, then back to a stable-only route.
    names = [name for name, _, _ in seen]
    assert names.index("Preview") < names.index("Switched") < names.index("ScalingDown")
    assert world.route == Traffic()
    # Pre-promotion analysis ran while green had no live traffic.
    measured = [c for c in world.calls if c[0] == "measure_all"]
    assert len(measured) >= 2


async def test_blue_green_waits_for_a_manual_promotion() -> None:
    world = World()
    world.add_target()
    world.add_rollout(blue_green_spec(autoPromotionEnabled=False, previewReplicaCount=1))
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Paused"})
    rec = reconciler(world)
    for _ in range(5):  # however long it waits, green gets no live traffic
        world.advance(3600)
        await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "Paused" and world.canary_weight == 0
    assert world.copies["canary"].replicas == 1
    assert world.route is not None and world.route.preview
    assert world.rollout is not None
    world.rollout["metadata"]["annotations"][PROMOTE_ANNOTATION] = "true"
    await settle(world, {"Succeeded"})
    scaled_up = [c for c in world.calls if c[0] == "ensure" and c[1] == "canary" and c[3] == 3]
    assert scaled_up, "green was not brought to full size before the switch"


async def test_header_and_mirror_routes_are_gone_after_a_rollback() -> None:
    spec = example_spec()
    spec["strategy"] = {
        "canary": {
            "steps": [
                {
                    "setHeaderRoute": {
                        "match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]
                    }
                },
                {"setMirrorRoute": {"percentage": 50}},
                {"setWeight": 10},
            ]
        }
    }
    world = World()
    world.add_target()
    world.add_rollout(spec)
    await settle(world, {"Initialized"})
    world.metric_value = 0.9
    world.set_version("1.2.0")
    rec = reconciler(world)
    held: list[Traffic] = []
    for _ in range(100):
        delay = await rec.reconcile(NAMESPACE, NAME)
        if world.route is not None and (not held or held[-1] != world.route):
            held.append(world.route)
        if world.status.get("phase") == "Failed":
            break
        world.wait(delay)
    assert world.status["phase"] == "Failed"
    assert any(t.header_route and t.mirror_percent == 50 and t.canary_weight == 10 for t in held)
    assert world.route == Traffic()
    assert "headerRoute" not in world.status and world.status["mirrorPercent"] == 0


# --- ownership and API errors -------------------------------------------------------------------


async def test_a_second_rollout_of_the_same_target_is_refused_while_the_first_exists() -> None:
    world = await initialized_world()
    assert world.target is not None
    assert world.target["metadata"]["annotations"][CLAIM_ANNOTATION] == NAME
    world.add_rollout(name="shop-2")  # another rollout naming the same Deployment
    world.calls.clear()
    assert await reconciler(world).reconcile(NAMESPACE, "shop-2") == backoff(1)
    refused = world.others["shop-2"]["status"]
    degraded = next(c for c in refused["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "TargetClaimed"
    assert f"already rolled out by ProgressiveRollout {NAMESPACE}/{NAME}" in degraded["message"]
    assert ("Warning", "TargetClaimed") in {(t, r) for t, r, _ in world.events()}
    assert not {"claim_target", "ensure", "ensure_services", "set_traffic"} & set(world.names())
    # Once the first is deleted, the second takes the target over.
    world.rollout = None
    await settle_named(world, "shop-2")
    assert world.target["metadata"]["annotations"][CLAIM_ANNOTATION] == "shop-2"


async def settle_named(world: World, name: str) -> None:
    rec = reconciler(world)
    for _ in range(20):
        delay = await rec.reconcile(NAMESPACE, name)
        if world.others[name].get("status", {}).get("phase") == "Initialized":
            return
        world.wait(delay)
    raise AssertionError(world.others[name].get("status"))


async def test_a_claim_left_by_a_deleted_rollout_is_taken_over() -> None:
    world = World()
    world.add_target()
    assert world.target is not None
    world.target["metadata"]["annotations"][CLAIM_ANNOTATION] = "gone"
    world.add_rollout()
    await settle(world, {"Initialized"})
    assert world.target["metadata"]["annotations"][CLAIM_ANNOTATION] == NAME


async def test_a_forbidden_write_names_the_verb_and_resource_and_recovers() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    forbidden = AdapterError(
        "Forbidden",
        'patch deployments shop-ns/shop-canary: deployments.apps "shop-canary" is forbidden: '
        'User "system:serviceaccount:tidegate:tidegate" cannot patch resource "deployments"',
    )
    world.fail["ensure"] = forbidden
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "Forbidden"
    assert 'cannot patch resource "deployments"' in degraded["message"]
    del world.fail["ensure"]
    await settle(world, {"Succeeded"}, rec)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "False"


async def test_a_name_taken_by_someone_else_is_reported_and_not_written() -> None:
    world = adopted_world()
    world.fail["observe"] = WorkloadError(
        "Deployment shop-ns/shop-stable exists and was not made by tidegate", reason="NameConflict"
    )
    await reconciler(world).reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "NameConflict"
    assert not {"ensure", "scale", "release_target", "set_traffic"} & set(world.names())


async def test_when_not_even_the_status_can_be_written_it_is_logged_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = adopted_world()
    world.fail["patch_status"] = AdapterError("Forbidden", "patch progressiverollouts/status: no")
    with caplog.at_level(logging.WARNING, "tidegate.reconciler"):
        assert await reconciler(world).reconcile(NAMESPACE, NAME) == backoff(1)
    assert "the status could not say so" in caplog.text
    assert world.events() == []  # no Event for what the status could not record either


# --- deletion -------------------------------------------------------------------------------


def delete(world: World) -> None:
    assert world.rollout is not None
    world.rollout["metadata"]["deletionTimestamp"] = "2026-01-01T01:00:00Z"


async def test_the_hand_back_finalizer_follows_on_delete() -> None:
    world = await initialized_world()
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER in world.rollout["metadata"]["finalizers"]
    world.rollout["spec"]["onDelete"] = "keep"
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]


async def test_a_deleted_rollout_hands_the_application_back_step_by_step() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    for _ in range(5):  # mid-rollout
        await rec.reconcile(NAMESPACE, NAME)
        world.advance(1)
    assert world.target is not None and world.target["spec"]["replicas"] == 0
    world.ready_on_write = False  # the user's pods take a while to become ready
    delete(world)
    world.calls.clear()
    assert await rec.reconcile(NAMESPACE, NAME) is None
    assert world.target["spec"]["replicas"] == 3  # back to its size first
    assert "release_route" not in world.names()  # not while nothing of it is ready
    await rec.reconcile(NAMESPACE, NAME)
    assert "release_route" not in world.names()
    world.target_ready = True  # ready: now the traffic goes back to it
    world.route_applied = False  # the gateway takes its time
    assert await rec.reconcile(NAMESPACE, NAME) is None  # woken by the route's status
    assert "release_route" in world.names() and "hand_over" not in world.names()
    assert await rec.reconcile(NAMESPACE, NAME) is None
    assert "hand_over" not in world.names()
    world.route_applied = True
    # Applied: the copies serve requests already routed to them for the scale-down delay (the
    # example's 5 s).
    assert await rec.reconcile(NAMESPACE, NAME) == 5
    assert "hand_over" not in world.names()
    world.advance(4)
    assert await rec.reconcile(NAMESPACE, NAME) == pytest.approx(1)
    world.advance(1)
    await rec.reconcile(NAMESPACE, NAME)
    names = world.names()
    assert names.index("release_route") < names.index("hand_over") < names.index("set_finalizer")
    assert ("release_route", "shop") in world.calls
    assert world.owned_by == "uid-1"
    assert CLAIM_ANNOTATION not in world.target["metadata"]["annotations"]
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]
    assert [r for _, r, _ in world.events()] == ["HandingBack", "HandedBack"]


async def test_a_deleted_rollout_with_on_delete_keep_touches_nothing() -> None:
    world = await initialized_world()
    assert world.rollout is not None
    world.rollout["spec"]["onDelete"] = "keep"
    world.rollout["metadata"]["finalizers"].append(HAND_BACK_FINALIZER)  # left by an older spec
    delete(world)
    world.calls.clear()
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.names() == ["get_rollout", "set_finalizer"]
    assert world.target is not None and world.target["spec"]["replicas"] == 0


async def test_a_hand_back_that_fails_is_reported_and_retried() -> None:
    world = await initialized_world()
    delete(world)
    world.fail["release_route"] = RoutingError("HTTPRoute shop-ns/shop does not exist")
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)  # scales the target back
    assert await rec.reconcile(NAMESPACE, NAME) == backoff(1)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "RoutingFailed"
    del world.fail["release_route"]
    for _ in range(3):  # released; the gateway applied it; the scale-down delay is over
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 0)
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]


async def test_a_rollout_whose_route_and_target_are_gone_is_let_go_at_once() -> None:
    """A namespace being deleted, or an app pruned whole: nothing is left to give back, and
    the finalizer goes in the same pass, with no drain (which would hold the namespace's
    deletion up, and the namespace controller backs off while it waits)."""
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    for _ in range(5):  # mid-rollout
        await rec.reconcile(NAMESPACE, NAME)
        world.advance(1)
    delete(world)
    world.route_exists = False
    world.target = None
    # Woken by the watches (the Service's selector given back), never by a timer.
    assert [await rec.reconcile(NAMESPACE, NAME) for _ in range(2)] == [None, None]
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]
    assert "handBackAt" not in world.status
    degraded = world.condition("Degraded")
    assert degraded is None or degraded["status"] == "False"


async def test_a_target_deleted_with_its_rollout_means_no_drain_even_with_the_route_left() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    for _ in range(5):
        await rec.reconcile(NAMESPACE, NAME)
        world.advance(1)
    delete(world)
    world.target = None
    # The route released, then seen applied: woken by watches, never by a timer.
    assert [await rec.reconcile(NAMESPACE, NAME) for _ in range(3)] == [None, None, None]
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]
    assert ("release_route", "shop") in world.calls
    assert "handBackAt" not in world.status


async def test_a_hand_back_waits_no_longer_than_the_default_scale_down_delay() -> None:
    """However long the spec asks copies to linger after a promotion (a day, here), a
    deletion holds them 30 s at most once the route is back on the user's Service."""
    world = await initialized_world()
    assert world.rollout is not None
    world.rollout["spec"]["strategy"]["canary"]["scaleDownDelaySeconds"] = 86400
    delete(world)
    rec = reconciler(world)
    waits = [await rec.reconcile(NAMESPACE, NAME) for _ in range(3)]
    assert 30 in waits and not [w for w in waits if w and w > 30], waits
    world.advance(30)
    await rec.reconcile(NAMESPACE, NAME)
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]


async def test_an_unexpected_error_is_degraded_on_that_rollout_and_backed_off() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    world.fail["observe_route"] = ZeroDivisionError("a bug")  # read on every pass
    rec = reconciler(world)
    delays = [await rec.reconcile(NAMESPACE, NAME) for _ in range(3)]
    assert delays == [backoff(1), backoff(2), backoff(3)]
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "InternalError"
    assert "a bug" not in degraded["message"] and "ZeroDivisionError" in degraded["message"]
    assert [r for _, r, _ in world.events()].count("InternalError") == 1
    del world.fail["observe_route"]
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is None or degraded["status"] == "False"


# --- fencing ------------------------------------------------------------------------------


async def test_a_status_decided_on_an_older_version_never_lands_and_nothing_is_acted_on() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    assert world.rollout is not None
    theirs = {"phase": "Progressing", "message": "written by the replica that leads now"}

    def newer_leader_writes() -> None:
        # Between this replica's read and its write, the new leader wrote the status.
        assert world.rollout is not None
        world.rollout["status"] = {**world.status, **theirs}
        bump_version(world.rollout)
        world.after_get = None

    world.after_get = newer_leader_writes
    world.calls.clear()
    delay = await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.status["message"] == theirs["message"]  # not overwritten
    assert not {"ensure", "scale", "set_traffic", "post_event"} & set(world.names())
    assert world.condition("Degraded") is None or world.condition("Degraded")["status"] != "True"
    assert delay == backoff(1)  # decided again, soon, on what is there now
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert world.status["canaryRevision"] == world.revision_of("1.1.0")


# --- what cannot be read ------------------------------------------------------------------


async def test_a_target_deleted_mid_rollout_takes_the_traffic_back_to_stable() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    rec = reconciler(world)
    await settle(world, {"Progressing"}, rec)
    for _ in range(3):  # on to a weight
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 60)
    assert world.canary_weight > 0
    world.target = None
    world.calls.clear()
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "Failed"
    assert world.canary_weight == 0
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "TargetNotFound"
    assert "does not exist" in degraded["message"]
    warnings = [r for t, r, _ in world.events() if t == "Warning"]
    assert warnings.count("TargetNotFound") == 1 and "RolledBack" in warnings
    # Still gone: reported, not told again; stable keeps serving.
    world.advance(60)
    await rec.reconcile(NAMESPACE, NAME)
    assert [r for t, r, _ in world.events() if t == "Warning"].count("TargetNotFound") == 1
    assert world.copies["stable"].replicas == 3
    assert world.canary_weight == 0


async def test_an_abort_works_while_a_metric_template_is_missing() -> None:
    world = World()
    world.add_target()
    spec = example_spec()
    spec["analysis"]["metrics"] = [{"name": "error-rate", "templateRef": {"name": "gone"}}]
    world.add_rollout(spec)
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    for _ in range(4):
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 60)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "TemplateNotFound"
    assert world.status["phase"] == "Progressing"
    assert world.rollout is not None
    world.rollout["metadata"]["annotations"][api.ABORT_ANNOTATION] = "alice"
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["phase"] == "Aborted"
    assert world.canary_weight == 0


async def test_a_rolled_back_rollout_deleted_hands_back_the_stable_template() -> None:
    world = await initialized_world()
    world.metric_value = 0.5  # over both thresholds
    world.set_version("1.2.0")
    await settle(world, {"Failed"})
    await until_idle(world)
    assert world.target is not None
    assert world.revision_of("1.2.0") == world.status["canaryRevision"]
    stable = world.status["stableRevision"]
    delete(world)
    rec = reconciler(world)
    for _ in range(8):
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 0)
        if HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]:  # type: ignore[index]
            break
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]  # type: ignore[index]
    names = world.names()
    assert names.index("restore_template") < names.index("restore_target")
    assert template_revision(world.target["spec"]["template"]) == stable
    warnings = [(r, m) for t, r, m in world.events() if t == "Warning"]
    assert any(r == "HandingBackStable" and stable in m for r, m in warnings), warnings


async def test_a_succeeded_rollout_deleted_keeps_the_targets_template() -> None:
    world = await initialized_world()
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"})
    delete(world)
    rec = reconciler(world)
    for _ in range(8):
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 0)
    assert "restore_template" not in world.names()
