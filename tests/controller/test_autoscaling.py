"""spec.autoscalerRef through the reconcile loop: the HPA copies made, kept in line with the
user's HPA, the canary's made and removed with each rollout, the replica counts they choose
left alone, and every problem with the user's HPA reported rather than worked around."""

from __future__ import annotations

from types import SimpleNamespace

import kopf
import pytest
from fakes import NAME, NAMESPACE, AutoscalerCopy, World, example_spec
from test_handlers import KEY, looping
from test_reconciler import delete, reconciler, settle, until_idle

from tidegate import handlers
from tidegate.ports import HAND_BACK_FINALIZER

WRITES = {"ensure", "scale", "write_autoscaler", "delete_autoscaler", "patch_status"}


def autoscaled_world(**autoscaler: int | str) -> World:
    world = World()
    world.add_target()
    world.add_autoscaler(**autoscaler)  # type: ignore[arg-type]
    world.add_rollout(example_spec(autoscalerRef={"name": "shop"}))
    return world


async def initialized() -> World:
    world = autoscaled_world()
    await settle(world, {"Initialized"})
    await until_idle(world)
    world.calls.clear()
    return world


def copied_spec(world: World) -> dict[str, object]:
    assert world.autoscaler is not None
    return {k: v for k, v in world.autoscaler["spec"].items() if k != "scaleTargetRef"}


async def test_the_stable_copy_gets_an_hpa_copy_and_the_canary_none_between_rollouts() -> None:
    world = await initialized()
    assert set(world.autoscaler_copies) == {"stable"}
    stable = world.autoscaler_copies["stable"]
    assert stable.scales == f"shop-{world.status['stableRevision']}"
    assert stable.spec == copied_spec(world)


async def test_the_canary_hpa_copy_lives_exactly_as_long_as_a_rollout() -> None:
    world = await initialized()
    world.set_version("1.1.0")
    rec = reconciler(world)
    seen: list[tuple[str, bool]] = []
    for _ in range(200):
        delay = await rec.reconcile(NAMESPACE, NAME)
        phase = world.status["phase"]
        if not seen or seen[-1] != (phase, "canary" in world.autoscaler_copies):
            seen.append((phase, "canary" in world.autoscaler_copies))
        if phase == "Succeeded":
            break
        world.wait(delay)
    # Gone as the canary's copy becomes the stable one, which the stable HPA copy scales now.
    assert seen == [("Progressing", True), ("Promoting", True), ("Succeeded", False)], seen
    assert world.autoscaler_copies["stable"].scales == f"shop-{world.status['stableRevision']}"
    # Made once the canary Deployment was asked for.
    names = world.names()
    assert (
        names.index("ensure") < names.index("write_autoscaler") < names.index("delete_autoscaler")
    )


async def test_a_rolled_back_canary_loses_its_hpa_copy_too() -> None:
    world = await initialized()
    world.metric_value = 0.5
    world.set_version("1.2.0")
    await settle(world, {"Progressing"})
    assert "canary" in world.autoscaler_copies
    await settle(world, {"Failed"})
    await until_idle(world)
    assert set(world.autoscaler_copies) == {"stable"}
    assert world.copies["canary"].replicas == 0


async def test_a_change_to_the_users_hpa_reaches_the_copies_and_nothing_else_is_written() -> None:
    world = await initialized()
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert not WRITES & set(world.names()), world.calls  # in line already: no write
    assert world.autoscaler is not None
    world.autoscaler["spec"]["maxReplicas"] = 12
    await rec.reconcile(NAMESPACE, NAME)
    assert ("write_autoscaler", "stable", copied_spec(world)) in world.calls
    assert world.autoscaler_copies["stable"].spec["maxReplicas"] == 12


async def test_the_replica_counts_the_hpa_copies_choose_are_left_alone() -> None:
    world = await initialized()
    world.copies["stable"].replicas = 5  # as the stable HPA copy decided
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert not WRITES & set(world.names()), world.calls
    assert world.copies["stable"].replicas == 5
    # A whole rollout, the canary resized by its own HPA copy once it runs.
    world.set_version("1.1.0")
    await settle(world, {"Progressing"}, rec)
    world.copies["canary"].replicas = 1
    await settle(world, {"Succeeded"}, rec)
    assert world.copies["stable"].replicas == 5  # kept across the new template
    assert world.copies["stable"].revision == world.revision_of("1.1.0")
    assert not [c for c in world.calls if c[0] == "scale" and c[1] == "stable"]


async def test_a_missing_hpa_is_reported_and_nothing_goes_on_without_it() -> None:
    world = autoscaled_world()
    world.autoscaler = None
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "AutoscalerNotFound"
    assert [r for t, r, _ in world.events() if t == "Warning"] == ["AutoscalerNotFound"]
    assert not {"ensure", "set_traffic", "release_target"} & set(world.names())
    world.add_autoscaler()
    await settle(world, {"Initialized"}, rec)
    assert world.condition("Degraded")["status"] == "False"  # type: ignore[index]
    assert set(world.autoscaler_copies) == {"stable"}


async def test_an_hpa_of_another_deployment_is_an_invalid_spec() -> None:
    world = autoscaled_world(scales="billing")
    await reconciler(world).reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert "spec.autoscalerRef" in degraded["message"]
    assert not {"ensure", "write_autoscaler"} & set(world.names())


async def test_an_hpa_with_a_copys_name_that_is_not_ours_is_reported_and_not_written() -> None:
    world = autoscaled_world()
    foreign = AutoscalerCopy(rollout=None, scales="elsewhere", spec={"maxReplicas": 1})
    world.autoscaler_copies["stable"] = foreign
    await reconciler(world).reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "NameConflict"
    assert world.autoscaler_copies["stable"] is foreign
    assert not {"write_autoscaler", "delete_autoscaler"} & set(world.names())


async def test_without_an_autoscaler_the_copies_go_and_replicas_are_tidegates_again() -> None:
    world = await initialized()
    world.copies["stable"].replicas = 5
    assert world.rollout is not None
    del world.rollout["spec"]["autoscalerRef"]
    # Someone else's HPA of the canary's name stays: it was never tidegate's.
    world.autoscaler_copies["canary"] = AutoscalerCopy(None, "elsewhere", {})
    await reconciler(world).reconcile(NAMESPACE, NAME)
    assert set(world.autoscaler_copies) == {"canary"}
    assert ("delete_autoscaler", "stable") in world.calls
    assert world.copies["stable"].replicas == 3  # the recorded size, healed


async def test_a_hand_back_takes_the_hpa_copies_and_lets_the_users_hpa_size_the_target() -> None:
    world = await initialized()
    world.ready_on_write = False
    delete(world)
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.target is not None and world.target["spec"]["replicas"] == 3
    # The user's HPA acts again now that its Deployment runs, and picks another count.
    world.target["spec"]["replicas"] = 4
    world.calls.clear()
    await rec.reconcile(NAMESPACE, NAME)
    assert "restore_target" not in world.names()  # its count, not set back to 3
    world.target_ready = True
    for _ in range(3):  # the route released, applied, then the scale-down delay
        world.advance(await rec.reconcile(NAMESPACE, NAME) or 0)
    assert world.target["spec"]["replicas"] == 4
    assert world.autoscaler_copies["stable"].owned_by == "uid-1"
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]


# --- the watch ---------------------------------------------------------------------------


def test_hpas_are_cached_trimmed_to_what_a_copy_is_made_of() -> None:
    body = kopf.Body(
        {
            "metadata": {"name": "shop", "namespace": "ns", "managedFields": [{}]},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "shop"},
                "minReplicas": 2,
                "maxReplicas": 5,
                "metrics": [{"type": "Resource"}],
                "behavior": {"scaleDown": {}},
            },
            "status": {"currentReplicas": 2, "conditions": []},
        }
    )
    kept = handlers.horizontalpodautoscalers(namespace="ns", name="shop", body=body)
    assert kept[("ns", "shop")] == {
        "metadata": {"name": "shop", "namespace": "ns"},
        "spec": body["spec"],
    }


def test_rollouts_are_found_by_their_hpa_and_the_copies_names() -> None:
    spec = {"targetRef": {"name": "shop"}, "autoscalerRef": {"name": "shop-hpa"}}
    found = handlers.rollouts_by_autoscaler(namespace="ns", name="r", spec=spec)  # type: ignore[arg-type]
    assert found == {
        ("ns", "shop-hpa"): "r",
        ("ns", "shop-stable"): "r",
        ("ns", "shop-canary"): "r",
    }
    without = handlers.rollouts_by_autoscaler(
        namespace="ns", name="r", spec={"targetRef": {"name": "a"}}
    )  # type: ignore[arg-type]
    assert set(without) == {("ns", "a-stable"), ("ns", "a-canary")}


@pytest.mark.looptime
async def test_an_hpa_event_wakes_the_rollouts_that_use_it() -> None:
    world = autoscaled_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    index = {(NAMESPACE, "shop"): [NAME]}
    seen = len(recorded.times)
    await handlers.autoscaler_changed(
        namespace=NAMESPACE, name="unrelated", memo=memo, rollouts_by_autoscaler=index
    )
    with pytest.raises(TimeoutError):
        await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    assert world.autoscaler is not None
    world.autoscaler["spec"]["maxReplicas"] = 9
    await handlers.autoscaler_changed(
        namespace=NAMESPACE, name="shop", memo=memo, rollouts_by_autoscaler=index
    )
    await recorded.wait_for(
        lambda: world.autoscaler_copies["stable"].spec["maxReplicas"] == 9, timeout=1
    )
    await rollouts.stop_all()


async def test_a_hand_back_restores_the_count_the_hpa_copy_had_chosen() -> None:
    world = await initialized()
    world.copies["stable"].replicas = 5  # as the stable HPA copy decided (recorded: 3)
    delete(world)
    rec = reconciler(world)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.target is not None and world.target["spec"]["replicas"] == 5
    assert ("restore_target", 5) in world.calls
