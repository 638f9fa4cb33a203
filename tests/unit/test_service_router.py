"""The Service-selector router against a fake client holding Services."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tidegate.adapters.service_router import ServiceSelectorRouter
from tidegate.adapters.workloads import ROLE_LABEL
from tidegate.plan import STABLE_ONLY, HeaderMatch, Traffic
from tidegate.ports import RoutingError

Obj = dict[str, Any]


class Stored:
    def __init__(self, obj: Obj) -> None:
        self.obj = obj

    def to_dict(self) -> Obj:
        return copy.deepcopy(self.obj)


class FakeClient:
    def __init__(self, *names: str) -> None:
        self.services = {
            n: {
                "metadata": {"name": n, "resourceVersion": "1"},
                "spec": {"selector": {"app": "shop"}},
            }
            for n in names
        }
        self.writes = 0

    async def get(self, kind: Any, name: str, namespace: str) -> Stored:
        from lightkube import ApiError

        if name not in self.services:

            class Response:
                status_code = 404

                def json(self) -> Obj:
                    return {"code": 404, "message": "not found"}

            raise ApiError(response=Response())  # type: ignore[arg-type]
        return Stored(self.services[name])

    async def patch(self, kind: Any, name: str, patch: Obj, **_: Any) -> None:
        self.writes += 1
        self.services[name]["spec"]["selector"] = patch["spec"]["selector"]


def selector(client: FakeClient, name: str) -> dict[str, str]:
    found: dict[str, str] = client.services[name]["spec"]["selector"]
    return found


async def test_switches_the_users_service_and_the_preview_between_the_versions() -> None:
    client = FakeClient("shop", "shop-preview")
    router = ServiceSelectorRouter(client, "ns", "shop", "shop-preview")  # type: ignore[arg-type]
    assert await router.observe() is None  # as the user wrote it: every version's pods
    for traffic in (STABLE_ONLY, Traffic(preview=True), Traffic(100, preview=True), STABLE_ONLY):
        assert await router.apply(traffic) is True
        assert await router.observe() == traffic
        writes = client.writes
        assert await router.apply(traffic) is False
        assert client.writes == writes
    assert selector(client, "shop") == {"app": "shop", ROLE_LABEL: "stable"}
    await router.apply(Traffic(100, preview=True))
    assert selector(client, "shop") == {"app": "shop", ROLE_LABEL: "canary"}
    assert selector(client, "shop-preview") == {"app": "shop", ROLE_LABEL: "canary"}


@pytest.mark.parametrize(
    "traffic",
    [Traffic(20), Traffic(header_route=(HeaderMatch("X", "1"),)), Traffic(mirror_percent=5)],
    ids=["split", "header", "mirror"],
)
async def test_what_a_selector_cannot_carry_is_a_routing_error(traffic: Traffic) -> None:
    router = ServiceSelectorRouter(FakeClient("shop"), "ns", "shop", None)  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="cannot carry"):
        await router.apply(traffic)
    assert "weights" not in router.capabilities and "mirror" not in router.capabilities


async def test_a_missing_service_is_a_routing_error() -> None:
    router = ServiceSelectorRouter(FakeClient(), "ns", "shop", None)  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="ns/shop does not exist"):
        await router.observe()
