"""Header, query and method matches, the Gateway API's precedence among matching rules, and
the RequestMirror filter, in the gateway's pure routing: no cluster, no processes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from tidegate_routes import written

from tidegate.adapters.gatewayapi import HEADER_RULE
from tidegate.plan import HeaderMatch, Traffic
from tidegate_devenv.routing import (
    BackendRef,
    Mirror,
    Route,
    RouteMatch,
    ValueMatch,
    mirror_targets,
    mirror_wanted,
    request_info,
    route_from_dict,
    select,
)

COOKIE_REGEX = r"(^|;\s*)canary=1(;|$)"


def route(
    name: str,
    rules: list[dict[str, Any]],
    hostnames: list[str] | None = None,
    namespace: str = "demo",
    created: str | None = None,
) -> Route:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if created is not None:
        meta["creationTimestamp"] = created
    hosts = ["demo.example"] if hostnames is None else hostnames
    spec: dict[str, Any] = {"hostnames": hosts, "rules": rules}
    return route_from_dict({"metadata": meta, "spec": spec})


def rule(backend: str, *matches: dict[str, Any], **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"backendRefs": [{"name": backend, "port": 80}], **extra}
    if matches:
        raw["matches"] = list(matches)
    return raw


def headers(*items: tuple[str, str], match_type: str = "Exact") -> dict[str, Any]:
    return {"headers": [{"type": match_type, "name": n, "value": v} for n, v in items]}


def prefix(value: str, **more: Any) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}, **more}


def backend_for(
    routes: list[Route],
    path: str = "/",
    sent: list[tuple[str, str]] | None = None,
    host: str = "demo.example",
    method: str = "GET",
) -> str | None:
    match = select(routes, request_info(host, path, method, sent or []))
    return None if match is None else match.rule.backends[0].name


# --- header matches ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ([("X-Canary", "always")], True),
        ([("x-canary", "always")], True),  # names are case-insensitive
        ([("X-CANARY", "always")], True),
        ([("X-Canary", "Always")], False),  # values are not
        ([("X-Canary", "always ")], False),
        ([("X-Canary", "never")], False),
        ([], False),
    ],
)
def test_exact_header_match(sent: list[tuple[str, str]], expected: bool) -> None:
    match = ValueMatch("x-canary", "always")
    assert match.accepts(request_info("h", "/", headers=sent).headers.get("x-canary")) is expected


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        (["canary=1"], True),
        (["a=b; canary=1"], True),
        (["canary=1; a=b"], True),
        (["a=b;canary=1;c=d"], True),
        (["a=b", "canary=1"], True),  # two Cookie headers are one "; "-joined value
        (["canary=10"], False),
        (["xcanary=1"], False),
        (["canary=0"], False),
        (["a=b"], False),
        ([], False),
    ],
)
def test_cookie_regex_searches_the_cookie_header(cookies: list[str], expected: bool) -> None:
    request = request_info("h", "/", headers=[("Cookie", c) for c in cookies])
    assert (
        ValueMatch("cookie", COOKIE_REGEX, "RegularExpression").accepts(
            request.headers.get("cookie")
        )
        is expected
    )


def test_regex_is_a_search_and_anchors_make_it_whole() -> None:
    search = ValueMatch("x-user", "beta", "RegularExpression")
    whole = ValueMatch("x-user", "^beta$", "RegularExpression")
    assert search.accepts("team-beta-1") and not whole.accepts("team-beta-1")
    assert whole.accepts("beta")
    # A header that is absent does not match even a pattern that matches "".
    assert not ValueMatch("x-user", ".*", "RegularExpression").accepts(None)


def test_a_regex_that_does_not_compile_matches_nothing() -> None:
    assert not ValueMatch("x-user", "(unclosed", "RegularExpression").accepts("(unclosed")


def test_repeated_headers_are_comma_joined() -> None:
    request = request_info("h", "/", headers=[("X-Group", "a"), ("x-group", "b")])
    assert request.headers["x-group"] == "a, b"


def test_only_the_first_entry_for_a_header_name_counts() -> None:
    parsed = route(
        "r", [rule("canary", headers(("X-Canary", "always"), ("x-canary", "never")))]
    ).rules[0]
    assert parsed.matches[0].headers == (ValueMatch("x-canary", "always"),)


def test_header_rules_win_over_the_plain_rule_whatever_their_order() -> None:
    routes = [
        route(
            "r",
            [
                rule("stable"),
                rule("exact", headers(("X-Canary", "always"))),
                rule("regex", headers(("Cookie", COOKIE_REGEX), match_type="RegularExpression")),
            ],
        )
    ]
    assert backend_for(routes) == "stable"
    assert backend_for(routes, sent=[("X-Canary", "always")]) == "exact"
    assert backend_for(routes, sent=[("X-Canary", "no")]) == "stable"
    assert backend_for(routes, sent=[("Cookie", "s=1; canary=1")]) == "regex"
    assert backend_for(routes, sent=[("Cookie", "canary=2")]) == "stable"
    # Both match with one header each: a tie, so the first of the two rules.
    both = [("X-Canary", "always"), ("Cookie", "canary=1")]
    assert backend_for(routes, sent=both) == "exact"


def test_more_header_matches_win() -> None:
    routes = [
        route(
            "r",
            [
                rule("one", headers(("X-A", "1"))),
                rule("two", headers(("X-A", "1"), ("X-B", "1"))),
            ],
        )
    ]
    assert backend_for(routes, sent=[("X-A", "1")]) == "one"
    assert backend_for(routes, sent=[("X-A", "1"), ("X-B", "1")]) == "two"
    assert backend_for(routes, sent=[("X-B", "1")]) is None  # no rule matches: a 404


# --- precedence ----------------------------------------------------------------------------


def test_path_comes_before_headers() -> None:
    routes = [
        route(
            "r",
            [
                rule("root-with-header", prefix("/", **headers(("X-Canary", "always")))),
                rule("api", prefix("/api")),
                rule("exact", {"path": {"type": "Exact", "value": "/api/v1"}}),
                rule("api-v1", prefix("/api/v1")),
            ],
        )
    ]
    canary = [("X-Canary", "always")]
    assert backend_for(routes, "/api/x", canary) == "api"  # the longer prefix wins
    assert backend_for(routes, "/api/v1/x", canary) == "api-v1"
    assert backend_for(routes, "/api/v1", canary) == "exact"  # Exact before any prefix
    assert backend_for(routes, "/other", canary) == "root-with-header"


def test_method_comes_before_headers_and_query_after() -> None:
    routes = [
        route(
            "r",
            [
                rule("header", prefix("/", **headers(("X-A", "1")))),
                rule("query", prefix("/", queryParams=[{"name": "beta", "value": "1"}])),
                rule("post", prefix("/", method="POST")),
            ],
        )
    ]
    assert backend_for(routes, "/?beta=1", [("X-A", "1")], method="POST") == "post"
    assert backend_for(routes, "/?beta=1", [("X-A", "1")]) == "header"
    assert backend_for(routes, "/?beta=1&beta=2") == "query"  # a repeated one: its first
    assert backend_for(routes, "/?beta=2") is None
    assert backend_for(routes, "/?Beta=1") is None  # query names are case-sensitive


def test_ties_across_routes_go_to_the_oldest_then_by_namespace_and_name() -> None:
    plain = [rule("x")]
    old = route("zz-old", [rule("old")], created="2024-01-01T00:00:00Z")
    new = route("aa-new", [rule("new")], created="2024-06-01T00:00:00Z")
    assert backend_for([new, old]) == "old"
    undated = route("aa-undated", [rule("undated")])
    assert backend_for([undated, new]) == "new"  # a route of unknown age comes last
    same_age = "2024-01-01T00:00:00Z"
    b = route("b", [rule("b")], namespace="a", created=same_age)
    a = route("a", [rule("a")], namespace="b", created=same_age)
    assert backend_for([a, b]) == "b"  # namespace "a" before namespace "b"
    assert backend_for([route("r", [*plain, rule("second")])]) == "x"  # then rule order


def test_hostname_precedence_comes_before_matches() -> None:
    catch_all = route("catch-all", [rule("catch-all", prefix("/api"))], hostnames=[])
    wildcard = route("wildcard", [rule("wildcard", prefix("/api/v1"))], hostnames=["*.example"])
    exact = route("exact", [rule("exact")], hostnames=["shop.example"])
    routes = [catch_all, wildcard, exact]
    assert backend_for(routes, "/api/v1", host="shop.example") == "exact"
    assert backend_for(routes, "/api/v1", host="other.example") == "wildcard"
    assert backend_for(routes, "/api/v1", host="elsewhere.test") == "catch-all"


def test_select_says_which_rule_and_match() -> None:
    routes = [route("r", [rule("a"), rule("b", prefix("/x"), prefix("/y"))])]
    match = select(routes, request_info("demo.example", "/y/1"))
    assert isinstance(match, RouteMatch)
    assert (match.rule_index, match.match.path.value) == (1, "/y")


# --- what tidegate's router writes ---------------------------------------------------------


def test_routes_as_tidegate_writes_them() -> None:
    header_route = (
        HeaderMatch("X-Canary", "always"),
        HeaderMatch("Cookie", COOKIE_REGEX, regex=True),
    )
    traffic = Traffic(canary_weight=0, header_route=header_route, mirror_percent=50, preview=True)
    shop, preview = (route_from_dict(r) for r in asyncio.run(written(traffic)))
    managed, header_rule = shop.rules
    assert header_rule.name == HEADER_RULE
    assert managed.mirrors == (Mirror(BackendRef("shop-canary", "shop", 80, 1), 50, 100),)
    assert header_rule.mirrors == ()  # the header rule does not mirror

    def backend(host: str, sent: list[tuple[str, str]]) -> str | None:
        return backend_for([shop, preview], "/cart", sent, host=host)

    both = [("x-canary", "always"), ("Cookie", "id=7; canary=1")]
    assert backend("shop.example", both) == "shop-canary"
    assert backend("shop.example", both[:1]) == "shop-stable"  # every header must match
    assert backend("shop.example", both[1:]) == "shop-stable"
    assert backend("shop.example", []) == "shop-stable"
    assert backend("preview.shop.example", []) == "shop-canary"
    assert backend("preview.shop.example", both) == "shop-canary"


def test_header_rule_keeps_the_users_path() -> None:
    """Under a user's path match, the header rule matches that path only."""
    user_rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}],
            "backendRefs": [{"name": "shop", "port": 80}],
        },
        {"backendRefs": [{"name": "static", "port": 80}]},
    ]
    traffic = Traffic(header_route=(HeaderMatch("X-Canary", "always"),))
    shop, preview = (route_from_dict(r) for r in asyncio.run(written(traffic, user_rules)))
    canary = [("X-Canary", "always")]
    assert backend_for([shop, preview], "/shop/cart", canary, host="shop.example") == "shop-canary"
    assert backend_for([shop, preview], "/shop/cart", host="shop.example") == "shop-stable"
    assert backend_for([shop, preview], "/img", canary, host="shop.example") == "static"


# --- RequestMirror -------------------------------------------------------------------------


def mirror_filter(name: str = "canary", **spec: Any) -> dict[str, Any]:
    ref = {"group": "", "kind": "Service", "name": name, "port": 80}
    return {"type": "RequestMirror", "requestMirror": {"backendRef": ref, **spec}}


@pytest.mark.parametrize(
    ("spec", "share"),
    [
        ({}, (1, 1)),
        ({"percent": 0}, (0, 100)),
        ({"percent": 30}, (30, 100)),
        ({"fraction": {"numerator": 1, "denominator": 3}}, (1, 3)),
        ({"fraction": {"numerator": 5}}, (5, 100)),
    ],
)
def test_mirror_share(spec: dict[str, Any], share: tuple[int, int]) -> None:
    parsed = route("r", [rule("stable", filters=[mirror_filter(**spec)])]).rules[0]
    assert parsed.mirrors == (Mirror(BackendRef("canary", "demo", 80, 1), *share),)


def test_only_mirrors_to_services_are_read() -> None:
    other = mirror_filter()
    other["requestMirror"]["backendRef"] |= {"group": "example.com", "kind": "Thing"}
    elsewhere = mirror_filter()
    elsewhere["requestMirror"]["backendRef"]["namespace"] = "elsewhere"
    modifier = {"type": "RequestHeaderModifier", "requestHeaderModifier": {}}
    parsed = route("r", [rule("stable", filters=[other, modifier, elsewhere])]).rules[0]
    assert [(m.backend.namespace, m.backend.name) for m in parsed.mirrors] == [
        ("elsewhere", "canary")
    ]


def test_mirror_all_or_nothing_draws_no_random_numbers() -> None:
    backend = BackendRef("canary", "demo", 80, 1)
    rng = random.Random(3)
    state = rng.getstate()
    assert all(mirror_wanted(Mirror(backend, 100, 100), rng) for _ in range(100))
    assert not any(mirror_wanted(Mirror(backend, 0, 100), rng) for _ in range(100))
    assert rng.getstate() == state


@pytest.mark.parametrize(("share", "expected"), [((50, 100), 0.5), ((1, 3), 1 / 3)])
def test_mirror_share_of_requests(share: tuple[int, int], expected: float) -> None:
    mirror = Mirror(BackendRef("canary", "demo", 80, 1), *share)
    rng = random.Random(11)
    copies = sum(mirror_wanted(mirror, rng) for _ in range(10_000))
    # The binomial standard deviation is below 0.5 %: a wide margin.
    assert abs(copies / 10_000 - expected) < 0.02


def test_each_mirror_filter_decides_for_itself() -> None:
    parsed = route(
        "r",
        [
            rule(
                "stable",
                filters=[mirror_filter(), mirror_filter("never", percent=0)],
            )
        ],
    ).rules[0]
    picks = Counter(b.name for _ in range(50) for b in mirror_targets(parsed, random.Random(0)))
    assert picks == Counter({"canary": 50})
