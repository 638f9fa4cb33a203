"""The Service-selector router against a fake client holding Services."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube

from tidegate.adapters.service_router import ServiceSelectorRouter
from tidegate.adapters.workloads import REVISION_LABEL, ROLE_LABEL
from tidegate.plan import STABLE_ONLY, HeaderMatch, Traffic
from tidegate.ports import RoutingError

Obj = dict[str, Any]


def service(name: str, **copy_label: str) -> Obj:
    selector = {"app": "shop", **copy_label}
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": {"selector": selector}}


def services(*names: str) -> FakeKube:
    """The user's Services named, and tidegate's: stable on the copy of v1, canary on v2's."""
    return FakeKube(
        *(service(n) for n in names),
        service("shop-stable", **{REVISION_LABEL: "v1"}),
        service("shop-canary", **{REVISION_LABEL: "v2"}),
    )


def selector(client: FakeKube, name: str) -> dict[str, str]:
    found: dict[str, str] = client.objects[name]["spec"]["selector"]
    return found


async def test_switches_the_users_service_and_the_preview_between_the_versions() -> None:
    client = services("shop", "shop-preview")
    router = ServiceSelectorRouter(client, "ns", "shop", "shop-preview", "shop")  # type: ignore[arg-type]
    assert await router.observe() is None  # as the user wrote it: every version's pods
    for traffic in (STABLE_ONLY, Traffic(preview=True), Traffic(100, preview=True), STABLE_ONLY):
        assert await router.apply(traffic) is True
        assert await router.observe() == traffic
        writes = len(client.patches)
        assert await router.apply(traffic) is False
        assert len(client.patches) == writes
    assert selector(client, "shop") == {"app": "shop", REVISION_LABEL: "v1"}
    await router.apply(Traffic(100, preview=True))
    assert selector(client, "shop") == {"app": "shop", REVISION_LABEL: "v2"}
    assert selector(client, "shop-preview") == {"app": "shop", REVISION_LABEL: "v2"}
    assert await router.release("shop") is True
    assert selector(client, "shop") == {"app": "shop"}


async def test_after_the_flip_going_back_to_stable_moves_nothing() -> None:
    client = services("shop")
    router = ServiceSelectorRouter(client, "ns", "shop", None, "shop")  # type: ignore[arg-type]
    await router.apply(Traffic(100))
    # The promotion flips tidegate's stable Service to the copy that took the traffic.
    client.objects["shop-stable"]["spec"]["selector"][REVISION_LABEL] = "v2"
    assert await router.observe() == STABLE_ONLY
    writes = len(client.patches)
    assert await router.apply(STABLE_ONLY) is False
    assert len(client.patches) == writes  # one cutover, not two


async def test_a_selector_of_a_copy_from_before_revisions_is_understood_and_replaced() -> None:
    client = services()
    client.objects["shop"] = service("shop", **{ROLE_LABEL: "stable"})
    client.objects["shop-stable"] = service("shop-stable", **{ROLE_LABEL: "stable"})
    router = ServiceSelectorRouter(client, "ns", "shop", None, "shop")  # type: ignore[arg-type]
    assert await router.observe() == STABLE_ONLY
    assert await router.apply(Traffic(100)) is True
    assert selector(client, "shop") == {"app": "shop", REVISION_LABEL: "v2"}


@pytest.mark.parametrize(
    "traffic",
    [Traffic(20), Traffic(header_route=(HeaderMatch("X", "1"),)), Traffic(mirror_percent=5)],
    ids=["split", "header", "mirror"],
)
async def test_what_a_selector_cannot_carry_is_a_routing_error(traffic: Traffic) -> None:
    router = ServiceSelectorRouter(services("shop"), "ns", "shop", None, "shop")  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="cannot carry"):
        await router.apply(traffic)
    assert "weights" not in router.capabilities and "mirror" not in router.capabilities


async def test_a_missing_service_is_a_routing_error() -> None:
    router = ServiceSelectorRouter(services(), "ns", "shop", None, "shop")  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="ns/shop does not exist"):
        await router.observe()


async def test_services_already_gone_have_nothing_to_release_and_route_nothing() -> None:
    router = ServiceSelectorRouter(services(), "ns", "shop", "shop-preview", "shop")  # type: ignore[arg-type]
    assert await router.release("shop") is False
    assert await router.applied() is True


def deployment(name: str, ready: int) -> Obj:
    return {"metadata": {"name": name}, "status": {"readyReplicas": ready}}


async def test_a_switch_is_applied_once_the_endpoints_hold_only_the_chosen_copys_pods() -> None:
    client = services("shop", "shop-preview")
    client.objects["shop-v1"] = deployment("shop-v1", ready=2)
    client.objects["shop-v2"] = deployment("shop-v2", ready=2)
    router = ServiceSelectorRouter(client, "ns", "shop", "shop-preview", "shop")  # type: ignore[arg-type]
    # As the user wrote it (every version's pods): nothing of tidegate's to wait for.
    client.slices["shop"] = {"shop-5d9f-abcde": True}
    assert await router.applied() is True
    await router.apply(Traffic(100, preview=True))
    # The EndpointSlice controller has not caught up: the old pods still take requests.
    client.slices["shop"] = {"shop-v1-7c4b9-aaaaa": True, "shop-v2-6f8d7-bbbbb": True}
    client.slices["shop-preview"] = {"shop-v2-6f8d7-bbbbb": True}
    assert await router.applied() is False
    # Only the new copy's pods: applied (an old pod no longer ready takes no request).
    client.slices["shop"] = {"shop-v1-7c4b9-aaaaa": False, "shop-v2-6f8d7-bbbbb": True}
    assert await router.applied() is True
    # The preview Service too is waited for.
    client.slices["shop-preview"] = {}
    assert await router.applied() is False
    client.objects["shop-v2"]["status"]["readyReplicas"] = 0
    assert await router.applied() is True  # nothing ready to hold: nothing to wait for


async def test_a_pod_is_told_from_a_copy_whose_name_starts_the_same() -> None:
    client = services("shop")
    client.objects["shop-v1"] = deployment("shop-v1", ready=1)
    router = ServiceSelectorRouter(client, "ns", "shop", None, "shop")  # type: ignore[arg-type]
    await router.apply(STABLE_ONLY)
    # `shop-v1-x` is another Deployment (its pods are `shop-v1-x-<hash>-<id>`).
    client.slices["shop"] = {"shop-v1-x-7c4b9-aaaaa": True}
    assert await router.applied() is False
    client.slices["shop"] = {"shop-v1-7c4b9-aaaaa": True}
    assert await router.applied() is True
