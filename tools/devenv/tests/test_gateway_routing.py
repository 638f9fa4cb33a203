"""Pure routing logic of the local gateway: no cluster, no processes."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from tidegate.adapters.gatewayapi import backend_refs
from tidegate_devenv.gateway import build_snapshot
from tidegate_devenv.routing import (
    BackendRef,
    PathMatch,
    Rule,
    SmoothSplit,
    backend_weight,
    host_matches,
    image_tag,
    path_matches,
    pick_backend,
    pick_template,
    pod_from_dict,
    ready_endpoints,
    route_from_dict,
    select_route,
    service_from_dict,
    split_by_template,
)


def route(
    name: str,
    hostnames: list[str] | None = None,
    rules: list[dict[str, Any]] | None = None,
    namespace: str = "demo",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": rules or [{"backendRefs": [{"name": "app", "port": 80}]}]}
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def pod(
    name: str,
    labels: dict[str, str],
    *,
    ready: bool = True,
    ip: str | None = "10.0.0.1",
    image: str = "demo:v1",
    env: dict[str, str] | None = None,
    namespace: str = "demo",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": image}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    status: dict[str, Any] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip:
        status["podIP"] = ip
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"containers": [container]},
        "status": status,
    }


def service(name: str, selector: dict[str, str], namespace: str = "demo") -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"selector": selector, "ports": [{"port": 80}]},
    }


# --- hosts and paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostnames", "host", "expected"),
    [
        ((), "anything.test", True),
        (("demo.example",), "demo.example", True),
        (("demo.example",), "DEMO.example:8080", True),
        (("demo.example",), "other.example", False),
        (("*.example",), "a.example", True),
        (("*.example",), "a.b.example", True),
        (("*.example",), "example", False),
        (("x.test", "demo.example"), "demo.example", True),
    ],
)
def test_host_matches(hostnames: tuple[str, ...], host: str, expected: bool) -> None:
    assert host_matches(hostnames, host) is expected


@pytest.mark.parametrize(
    ("match", "path", "expected"),
    [
        (PathMatch("PathPrefix", "/"), "/anything", True),
        (PathMatch("PathPrefix", "/api"), "/api", True),
        (PathMatch("PathPrefix", "/api"), "/api/v1", True),
        (PathMatch("PathPrefix", "/api/"), "/api/v1", True),
        (PathMatch("PathPrefix", "/api"), "/apix", False),
        (PathMatch("Exact", "/api"), "/api", True),
        (PathMatch("Exact", "/api"), "/api/", False),
        (PathMatch("RegularExpression", ".*"), "/api", False),
    ],
)
def test_path_matches(match: PathMatch, path: str, expected: bool) -> None:
    assert path_matches(match, path) is expected


def test_select_route_by_host_then_first_by_namespace_and_name() -> None:
    routes = [
        route_from_dict(route("zz", ["demo.example"])),
        route_from_dict(route("aa", ["demo.example"])),
        route_from_dict(route("other", ["other.example"])),
    ]
    match = select_route(routes, "demo.example", "/")
    assert match is not None
    assert match.route.name == "aa"
    other = select_route(routes, "other.example", "/")
    assert other is not None and other.route.name == "other"
    assert select_route(routes, "nobody.example", "/") is None


def test_route_without_hostnames_matches_any_host() -> None:
    routes = [route_from_dict(route("catchall"))]
    match = select_route(routes, "whatever:1234", "/x")
    assert match is not None and match.route.name == "catchall"


def test_select_first_matching_rule_by_path() -> None:
    rules: list[dict[str, Any]] = [
        {
            "matches": [{"path": {"type": "Exact", "value": "/health"}}],
            "backendRefs": [{"name": "health"}],
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
            "backendRefs": [{"name": "api"}],
        },
        {"backendRefs": [{"name": "rest"}]},
    ]
    routes = [route_from_dict(route("r", ["demo.example"], rules))]

    def backend_for(path: str) -> str:
        match = select_route(routes, "demo.example", path)
        assert match is not None
        return match.rule.backends[0].name

    assert backend_for("/health") == "health"
    assert backend_for("/api/things?x=1") == "api"
    assert backend_for("/health/deep") == "rest"
    assert backend_for("/") == "rest"


def test_no_rule_matching_path_gives_no_match() -> None:
    rules = [
        {"matches": [{"path": {"type": "Exact", "value": "/only"}}], "backendRefs": [{"name": "a"}]}
    ]
    routes = [route_from_dict(route("r", None, rules))]
    assert select_route(routes, "h", "/other") is None


def test_route_parsing_defaults() -> None:
    parsed = route_from_dict(
        route(
            "r",
            ["Demo.Example"],
            [
                {
                    "backendRefs": [
                        {"name": "a", "port": 8080},
                        {"name": "b", "namespace": "elsewhere", "weight": 0},
                        {"name": "not-a-service", "group": "example.com", "kind": "Thing"},
                    ]
                }
            ],
        )
    )
    assert parsed.hostnames == ("demo.example",)
    assert parsed.rules[0].backends == (
        BackendRef("a", "demo", 8080, 1),
        BackendRef("b", "elsewhere", None, 0),
    )


# --- weighted backend choice ---------------------------------------------------------------


def test_pick_backend_splits_every_run_of_picks_exactly_as_weighted() -> None:
    rule = Rule(
        matches=(),
        backends=(BackendRef("stable", "demo", 80, 90), BackendRef("canary", "demo", 80, 10)),
    )
    split = SmoothSplit()
    picks = [_name(pick_backend(rule, split)) for _ in range(1_000)]
    # Every run of 100 holds exactly 10 canary picks, spread evenly: any window of n picks
    # has n/10 of them, give or take one.
    for start in range(0, 1_000, 100):
        assert picks[start : start + 100].count("canary") == 10
    for n in (7, 33, 81):
        for start in range(0, 1_000 - n, 13):
            assert abs(picks[start : start + n].count("canary") - n / 10) <= 1
    assert "canary, canary" not in ", ".join(picks)


def test_a_rules_split_starts_again_when_its_weights_change_and_rules_keep_their_own() -> None:
    backends = (BackendRef("stable", "demo", 80, 70), BackendRef("canary", "demo", 80, 30))
    split = SmoothSplit()
    for _ in range(5):  # part-way through a run of the 70/30 split
        pick_backend(Rule((), backends), split, "shop")
    sixty = Rule((), (replace(backends[0], weight=40), replace(backends[1], weight=60)))
    picks = [_name(pick_backend(sixty, split, "shop")) for _ in range(100)]
    assert picks.count("canary") == 60
    # Another route's rule has its own state: its picks leave this one's alone.
    other = Rule((), (BackendRef("a", "d", 80, 1), BackendRef("b", "d", 80, 1)))
    mixed = []
    for _ in range(100):
        pick_backend(other, split, "other")
        mixed.append(_name(pick_backend(sixty, split, "shop")))
    assert mixed.count("canary") == 60


def test_pick_backend_never_picks_zero_weight() -> None:
    rule = Rule(
        matches=(),
        backends=(BackendRef("stable", "demo", 80, 0), BackendRef("canary", "demo", 80, 5)),
    )
    split = SmoothSplit()
    assert {pick_backend(rule, split) for _ in range(500)} == {rule.backends[1]}


@pytest.mark.parametrize("weights", [(), (0,), (0, 0)])
def test_pick_backend_without_positive_weight_is_none(weights: tuple[int, ...]) -> None:
    rule = Rule(
        matches=(), backends=tuple(BackendRef(f"b{i}", "d", 80, w) for i, w in enumerate(weights))
    )
    assert pick_backend(rule, SmoothSplit()) is None


def test_backend_weight_reads_what_the_operator_writes() -> None:
    refs = backend_refs("shop-stable", "shop-canary", 80, 30)
    written = route(
        "shop", ["shop.example"], [{"backendRefs": [{"name": "x"}]}, {"backendRefs": refs}]
    )
    assert backend_weight(written, "shop-canary", rule_index=1) == 30
    assert backend_weight(written, "shop-stable", rule_index=1) == 70
    assert backend_weight(written, "shop-canary") is None  # rule 0 does not route to it
    assert backend_weight(written, "shop-canary", rule_index=2) is None


def test_backend_weight_of_an_unweighted_ref_is_one() -> None:
    # As examples/canary's route is written, before tidegate takes the rule over.
    assert backend_weight(route("shop", rules=[{"backendRefs": [{"name": "shop"}]}]), "shop") == 1


def _name(backend: BackendRef | None) -> str | None:
    return None if backend is None else backend.name


# --- pods, services and templates ----------------------------------------------------------


def test_image_tag() -> None:
    assert image_tag("demo:v2") == "v2"
    assert image_tag("registry.local:5000/team/demo:1.4") == "1.4"
    assert image_tag("registry.local:5000/team/demo") == "latest"
    assert image_tag("demo@sha256:0123456789abcdef0123") == "0123456789ab"


def test_pod_spec_from_env_with_image_tag_default() -> None:
    with_env = pod_from_dict(
        pod(
            "p", {}, image="demo:v9", env={"VERSION": "v2", "ERROR_RATE": "0.5", "LATENCY_MS": "20"}
        )
    )
    assert (with_env.spec.version, with_env.spec.error_rate, with_env.spec.latency_ms) == (
        "v2",
        0.5,
        20.0,
    )
    plain = pod_from_dict(pod("p", {}, image="demo:v9", env={"ERROR_RATE": "bogus"}))
    assert (plain.spec.version, plain.spec.error_rate, plain.spec.latency_ms) == ("v9", 0.0, 5.0)


def test_ready_endpoints_need_selector_readiness_ip_and_namespace() -> None:
    svc = service_from_dict(service("app", {"app": "demo"}))
    pods = [
        pod_from_dict(pod("ok", {"app": "demo", "extra": "x"})),
        pod_from_dict(pod("unready", {"app": "demo"}, ready=False)),
        pod_from_dict(pod("no-ip", {"app": "demo"}, ip=None)),
        pod_from_dict(pod("other-app", {"app": "other"})),
        pod_from_dict(pod("other-ns", {"app": "demo"}, namespace="elsewhere")),
    ]
    terminating = pod("terminating", {"app": "demo"})
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    pods.append(pod_from_dict(terminating))
    assert [p.name for p in ready_endpoints(svc, pods)] == ["ok"]
    no_selector = service_from_dict(service("manual", {}))
    assert ready_endpoints(no_selector, pods) == []


def test_split_by_template_hash_label() -> None:
    pods = [
        pod_from_dict(pod("a-1", {"pod-template-hash": "aaa"}, env={"VERSION": "v1"})),
        pod_from_dict(pod("a-2", {"pod-template-hash": "aaa"}, env={"VERSION": "v1"})),
        pod_from_dict(pod("b-1", {"pod-template-hash": "bbb"}, env={"VERSION": "v2"})),
    ]
    groups = split_by_template(pods)
    assert sorted(groups) == ["demo/aaa", "demo/bbb"]
    assert groups["demo/aaa"].count == 2 and groups["demo/aaa"].spec.version == "v1"
    assert groups["demo/bbb"].pods == ("b-1",)


def test_split_by_template_without_hash_uses_image_and_env() -> None:
    pods = [
        pod_from_dict(pod("x", {}, image="demo:v1")),
        pod_from_dict(pod("y", {}, image="demo:v1")),
        pod_from_dict(pod("z", {}, image="demo:v1", env={"ERROR_RATE": "0.2"})),
        pod_from_dict(pod("w", {}, image="demo:v2")),
    ]
    groups = split_by_template(pods)
    assert sorted(g.count for g in groups.values()) == [1, 1, 2]


def test_pick_template_in_proportion_to_ready_pods() -> None:
    pods = [pod_from_dict(pod(f"s-{i}", {"pod-template-hash": "s"})) for i in range(3)]
    pods.append(pod_from_dict(pod("c-0", {"pod-template-hash": "c"})))
    groups = split_by_template(pods)
    rng = random.Random(99)
    picks = Counter(g.key for g in (pick_template(groups, rng) for _ in range(8000)) if g)
    assert 0.22 < picks["demo/c"] / 8000 < 0.28
    assert pick_template({}, rng) is None


def test_build_snapshot_maps_services_to_templates() -> None:
    snapshot = build_snapshot(
        routes=[route("r", ["demo.example"])],
        services=[
            service("app", {"app": "demo"}),
            service("app-canary", {"app": "demo", "track": "canary"}),
            service("dns", {"k8s-app": "dns"}, namespace="kube-system"),
        ],
        pods=[
            pod("s", {"app": "demo", "pod-template-hash": "s"}),
            pod("c", {"app": "demo", "track": "canary", "pod-template-hash": "c"}),
            pod("dns", {"k8s-app": "dns"}, namespace="kube-system"),
        ],
    )
    assert set(snapshot.endpoints[("demo", "app")]) == {"demo/s", "demo/c"}
    assert set(snapshot.endpoints[("demo", "app-canary")]) == {"demo/c"}
    assert ("kube-system", "dns") not in snapshot.endpoints
    # The first Service by name that selects a template labels its demo app.
    assert snapshot.template_service["demo/c"] == ("demo", "app")
    assert set(snapshot.templates) == {"demo/s", "demo/c"}
