"""The Gateway API router: the route shapes it writes and reads back, against a fake client
that stores routes as the API server would hand them back."""

from __future__ import annotations

from typing import Any

import pytest
from fake_kube import FakeKube

from tidegate.adapters.cache import trim
from tidegate.adapters.gatewayapi import HEADER_RULE, GatewayAPIRouter, route_applied
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


async def test_routes_already_gone_have_nothing_to_release_and_route_nothing() -> None:
    gone = router(FakeKube(), preview="shop-preview")
    assert await gone.release("shop") is False
    assert await gone.applied() is True


def with_parents(route: Obj, generation: int, *accepted: tuple[str, int]) -> Obj:
    """`route` at `generation`, with one status.parents entry per (Accepted status,
    observedGeneration)."""
    route["metadata"]["generation"] = generation
    route["status"] = {
        "parents": [
            {
                "parentRef": {"name": f"gw-{i}"},
                "controllerName": "example.com/gateway",
                "conditions": [
                    {"type": "ResolvedRefs", "status": "True", "observedGeneration": seen},
                    {"type": "Accepted", "status": status, "observedGeneration": seen},
                ],
            }
            for i, (status, seen) in enumerate(accepted)
        ]
    }
    return route


@pytest.mark.parametrize(
    ("parents", "applied"),
    [
        ((), False),  # no Gateway controller has looked at it yet
        ((("True", 3),), True),
        ((("True", 4),), True),
        ((("True", 2),), False),  # accepted an older spec: the new one is not applied yet
        ((("False", 3),), False),
        ((("True", 3), ("True", 2)), False),  # one of two Gateways lags
        ((("True", 3), ("True", 3)), True),
    ],
)
def test_a_route_is_applied_when_every_parent_accepted_its_generation(
    parents: tuple[tuple[str, int], ...], applied: bool
) -> None:
    assert route_applied(with_parents(user_route(), 3, *parents)) is applied


async def test_the_router_is_applied_only_when_both_routes_are() -> None:
    live = with_parents(user_route(), 2, ("True", 2))
    preview = with_parents(user_route("shop-preview"), 5, ("True", 4))
    assert await router(FakeKube(live)).applied() is True
    assert await router(FakeKube(live, preview), preview="shop-preview").applied() is False


def test_the_cache_keeps_of_a_routes_status_only_what_says_it_was_applied() -> None:
    route = with_parents(user_route(), 3, ("True", 3))
    route["status"]["parents"][0]["conditions"][1]["message"] = "x" * 1000
    trimmed = trim("httproutes", route)
    assert trimmed["status"] == {
        "parents": [
            {
                "conditions": [
                    {"type": "ResolvedRefs", "status": "True", "observedGeneration": 3},
                    {"type": "Accepted", "status": "True", "observedGeneration": 3},
                ]
            }
        ]
    }
    assert route_applied(trimmed)


async def test_a_released_route_reads_back_equal_and_is_not_written_again() -> None:
    client = FakeKube(user_route(), user_route("shop-preview"))
    shop = router(client, preview="shop-preview")
    await shop.apply(AB)
    assert await shop.release("shop") is True
    writes = len(client.patches)
    # (The API server defaults each backendRef's weight to 1: the release writes it so.)
    assert await shop.release("shop") is False
    assert len(client.patches) == writes
    assert await shop.apply(STABLE_ONLY) is True
    assert await shop.apply(STABLE_ONLY) is False
