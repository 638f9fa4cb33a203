"""The Gateway API router: the route shapes it writes and reads back, against a fake client
that stores routes as the API server would hand them back."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube

from tidegate.adapters.gatewayapi import HEADER_RULE, GatewayAPIRouter
from tidegate.plan import STABLE_ONLY, HeaderMatch, Traffic
from tidegate.ports import RoutingError

Obj = dict[str, Any]


def user_route(name: str = "shop", backend: str = "shop") -> Obj:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": "1"},
        "spec": {
            "hostnames": [f"{name}.example.com"],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [
                        {
                            "type": "RequestHeaderModifier",
                            "requestHeaderModifier": {"add": [{"name": "X-Via", "value": "gw"}]},
                        }
                    ],
                    "backendRefs": [{"group": "", "kind": "Service", "name": backend, "port": 80}],
                }
            ],
        },
    }


def router(client: FakeKube, preview: str | None = None) -> GatewayAPIRouter:
    return GatewayAPIRouter(
        client, "ns", "shop", 0, "shop-stable", "shop-canary", 80, preview_route=preview
    )  # type: ignore[arg-type]


AB = Traffic(
    canary_weight=20,
    header_route=(HeaderMatch("X-Canary", "always"), HeaderMatch("Cookie", "canary=1", True)),
    mirror_percent=50,
    preview=True,
)


async def test_a_route_as_the_user_wrote_it_is_not_in_tidegates_shape() -> None:
    assert await router(FakeKube(user_route())).observe() is None


async def test_every_intent_reads_back_as_written_and_a_second_write_is_skipped() -> None:
    client = FakeKube(user_route(), user_route("shop-preview"))
    shop = router(client, preview="shop-preview")
    for traffic in (STABLE_ONLY, AB, Traffic(canary_weight=100, preview=True), STABLE_ONLY):
        assert await shop.apply(traffic) is True
        assert await shop.observe() == traffic
        writes = len(client.patches)
        assert await shop.apply(traffic) is False
        assert len(client.patches) == writes


async def test_the_shapes_written() -> None:
    client = FakeKube(user_route(), user_route("shop-preview"))
    await router(client, preview="shop-preview").apply(AB)
    rules = client.objects["shop"]["spec"]["rules"]
    managed, header = rules
    assert [(r["name"], r["weight"]) for r in managed["backendRefs"]] == [
        ("shop-stable", 80),
        ("shop-canary", 20),
    ]
    # The user's own filter stays; tidegate's mirror is added after it.
    assert [f["type"] for f in managed["filters"]] == ["RequestHeaderModifier", "RequestMirror"]
    mirror = managed["filters"][1]["requestMirror"]
    assert (mirror["backendRef"]["name"], mirror["percent"]) == ("shop-canary", 50)
    # The header rule matches what the managed rule matches, plus the headers, and carries
    # the user's filters (not the mirror) to the canary alone.
    assert header["name"] == HEADER_RULE
    assert header["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "headers": [
                {"type": "Exact", "name": "X-Canary", "value": "always"},
                {"type": "RegularExpression", "name": "Cookie", "value": "canary=1"},
            ],
        }
    ]
    assert [f["type"] for f in header["filters"]] == ["RequestHeaderModifier"]
    assert [r["name"] for r in header["backendRefs"]] == ["shop-canary"]
    preview = client.objects["shop-preview"]["spec"]["rules"][0]["backendRefs"]
    assert [r["name"] for r in preview] == ["shop-canary"]
    assert client.objects["shop"]["spec"]["hostnames"] == ["shop.example.com"]


async def test_ending_removes_the_header_rule_and_the_mirror_but_not_the_users_filters() -> None:
    client = FakeKube(user_route(), user_route("shop-preview"))
    shop = router(client, preview="shop-preview")
    await shop.apply(AB)
    await shop.apply(STABLE_ONLY)
    (managed,) = client.objects["shop"]["spec"]["rules"]
    assert [f["type"] for f in managed["filters"]] == ["RequestHeaderModifier"]
    preview = client.objects["shop-preview"]["spec"]["rules"][0]["backendRefs"]
    assert [r["name"] for r in preview] == ["shop-stable"]


async def test_a_rule_without_matches_gets_a_header_rule_for_every_path() -> None:
    route = user_route()
    del route["spec"]["rules"][0]["matches"]
    client = FakeKube(route)
    await router(client).apply(Traffic(header_route=(HeaderMatch("X-Canary", "1"),)))
    header = client.objects["shop"]["spec"]["rules"][1]
    assert header["matches"][0]["path"] == {"type": "PathPrefix", "value": "/"}


async def test_a_preview_route_pointing_elsewhere_is_not_in_tidegates_shape() -> None:
    client = FakeKube(user_route(), user_route("shop-preview", backend="somebody-else"))
    shop = router(client, preview="shop-preview")
    await shop._edit("shop", lambda r: shop._live(r, STABLE_ONLY))
    assert await shop.observe() is None


async def test_conflicting_writes_are_retried_then_given_up() -> None:
    client = FakeKube(user_route())
    client.conflicts = 2
    assert await router(client).apply(Traffic(canary_weight=10)) is True
    client.conflicts = 10
    with pytest.raises(RoutingError, match="kept changing"):
        await router(client).apply(Traffic(canary_weight=30))


async def test_missing_routes_and_rules_are_routing_errors() -> None:
    with pytest.raises(RoutingError, match="ns/shop does not exist"):
        await router(FakeKube()).observe()
    with pytest.raises(RoutingError, match="ns/shop-preview does not exist"):
        await router(FakeKube(user_route()), preview="shop-preview").apply(STABLE_ONLY)
    far = GatewayAPIRouter(FakeKube(user_route()), "ns", "shop", 3, "a", "b", 80)  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="rule 3 does not exist"):
        await far.observe()
