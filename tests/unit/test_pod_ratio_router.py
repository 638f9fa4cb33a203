"""The pod-ratio router against a fake client holding Services, copies and endpoints."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube

from tidegate.adapters.pod_ratio_router import WEIGHT_ANNOTATION, PodRatioRouter
from tidegate.adapters.workloads import REVISION_LABEL
from tidegate.plan import STABLE_ONLY, HeaderMatch, Traffic
from tidegate.ports import RoutingError

Obj = dict[str, Any]


def service(name: str, **copy_label: str) -> Obj:
    selector = {"app": "shop", **copy_label}
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": {"selector": selector}}


def deployment(name: str, replicas: int, ready: int | None = None) -> Obj:
    status = {"readyReplicas": replicas if ready is None else ready}
    return {"metadata": {"name": name}, "spec": {"replicas": replicas}, "status": status}


def cluster(stable: int = 3, canary: int = 1) -> FakeKube:
    """Service shop as the user wrote it; tidegate's stable on the copy of v1 (`stable`
    replicas), canary on v2's (`canary` replicas)."""
    return FakeKube(
        service("shop"),
        service("shop-stable", **{REVISION_LABEL: "v1"}),
        service("shop-canary", **{REVISION_LABEL: "v2"}),
        deployment("shop-v1", stable),
        deployment("shop-v2", canary),
    )


def router(client: FakeKube) -> PodRatioRouter:
    return PodRatioRouter(client, "ns", "shop", "shop")  # type: ignore[arg-type]


def pods(copy: str, count: int, ready: bool = True) -> dict[str, bool]:
    return {f"{copy}-6f8d7-p{i}": ready for i in range(count)}


async def test_weight_zero_selects_stable_and_a_weight_selects_both_copies() -> None:
    client = cluster()
    routes = router(client)
    assert await routes.observe() is None  # as the user wrote it
    for traffic in (STABLE_ONLY, Traffic(25), Traffic(60), STABLE_ONLY):
        assert await routes.apply(traffic) is True
        assert await routes.observe() == traffic
        writes = len(client.patches)
        assert await routes.apply(traffic) is False
        assert len(client.patches) == writes
    assert client.objects["shop"]["spec"]["selector"] == {"app": "shop", REVISION_LABEL: "v1"}
    assert WEIGHT_ANNOTATION not in client.objects["shop"]["metadata"].get("annotations", {})
    await routes.apply(Traffic(25))
    assert client.objects["shop"]["spec"]["selector"] == {"app": "shop"}
    assert client.objects["shop"]["metadata"]["annotations"][WEIGHT_ANNOTATION] == "25"
    assert await routes.release("shop") is True
    assert await routes.observe() is None
    assert client.objects["shop"]["spec"]["selector"] == {"app": "shop"}


async def test_a_split_is_applied_once_the_endpoints_hold_each_copys_planned_ready_pods() -> None:
    client = cluster(stable=3, canary=1)
    routes = router(client)
    await routes.apply(Traffic(25))
    # Stable still has a fourth pod ready (it was scaled from 4): not yet the plan.
    client.slices["shop"] = {**pods("shop-v1", 4), **pods("shop-v2", 1)}
    assert await routes.applied() is False
    # That pod is terminating (not ready): 3 and 1, as planned.
    client.slices["shop"] = {**pods("shop-v1", 3), "shop-v1-6f8d7-px": False, **pods("shop-v2", 1)}
    assert await routes.applied() is True
    # The canary's pod is not ready: short of the plan.
    client.slices["shop"] = {**pods("shop-v1", 3), **pods("shop-v2", 1, ready=False)}
    assert await routes.applied() is False
    # A pod of a copy with no role (one a promotion replaced) is selected too: not the plan.
    client.slices["shop"] = {**pods("shop-v1", 3), **pods("shop-v2", 1), **pods("shop-v0", 1)}
    assert await routes.applied() is False
    # A pod of the user's own Deployment (a resize, scaled back by tidegate) is not counted.
    client.slices["shop"] = {**pods("shop-v1", 3), **pods("shop-v2", 1), "shop-5d9f-abcde": True}
    assert await routes.applied() is True


async def test_stable_alone_is_applied_once_only_its_pods_are_behind_the_service() -> None:
    client = cluster(stable=4, canary=1)
    routes = router(client)
    await routes.apply(STABLE_ONLY)
    client.slices["shop"] = {**pods("shop-v1", 4), **pods("shop-v2", 1)}
    assert await routes.applied() is False
    client.slices["shop"] = pods("shop-v1", 4)
    assert await routes.applied() is True
    # No ready endpoint yet, while the copy has ready pods: the controller has not caught up.
    client.slices["shop"] = {}
    assert await routes.applied() is False


@pytest.mark.parametrize(
    "traffic",
    [
        Traffic(header_route=(HeaderMatch("X", "1"),)),
        Traffic(mirror_percent=5),
        Traffic(preview=True),
    ],
    ids=["header", "mirror", "preview"],
)
async def test_what_pods_cannot_carry_is_a_routing_error(traffic: Traffic) -> None:
    routes = router(cluster())
    with pytest.raises(RoutingError, match="cannot carry"):
        await routes.apply(traffic)
    assert routes.capabilities == {"weights", "service"}


async def test_a_missing_service_is_a_routing_error_and_routes_nothing() -> None:
    client = FakeKube()
    routes = router(client)
    with pytest.raises(RoutingError, match="ns/shop does not exist"):
        await routes.observe()
    assert await routes.applied() is True
    assert await routes.release("shop") is False
