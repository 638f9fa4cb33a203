"""What each route's configuration sends to each version, and when that changed at the
gateway: what the benchmarks read as "the write took effect"."""

from __future__ import annotations

from pathlib import Path

from test_gateway_routing import pod, route, service

from tidegate_devenv.gateway import Gateway, build_snapshot
from tidegate_devenv.routing import pod_from_dict


def weighted(primary: int, canary: int) -> dict[str, object]:
    return route(
        "shop",
        ["shop.example"],
        [
            {
                "backendRefs": [
                    {"name": "shop-primary", "port": 80, "weight": primary},
                    {"name": "shop-canary", "port": 80, "weight": canary},
                ]
            }
        ],
    )


SERVICES = [
    service("shop", {"app": "shop"}),
    service("shop-primary", {"app": "shop-primary"}),
    service("shop-canary", {"app": "shop"}),
]


def test_weights_split_versions() -> None:
    pods = [
        pod("p", {"app": "shop-primary", "pod-template-hash": "p"}, env={"VERSION": "1"}),
        pod("c", {"app": "shop", "pod-template-hash": "c"}, env={"VERSION": "2"}),
    ]
    snapshot = build_snapshot([weighted(80, 20)], SERVICES, pods)
    assert snapshot.plans() == {("demo", "shop"): {"1": 0.8, "2": 0.2}}
    snapshot = build_snapshot([weighted(100, 0)], SERVICES, pods)
    assert snapshot.plans() == {("demo", "shop"): {"1": 1.0}}


def test_ready_pods_split_one_service_as_kube_proxy_would() -> None:
    # Argo Rollouts' basic canary: one Service over two ReplicaSets, 4 stable pods and 1
    # canary pod, labelled by Argo's own hash label.
    pods = [
        pod(f"s{i}", {"app": "shop", "rollouts-pod-template-hash": "s"}, env={"VERSION": "1"})
        for i in range(4)
    ]
    pods.append(pod("c", {"app": "shop", "rollouts-pod-template-hash": "c"}, env={"VERSION": "2"}))
    pods.append(
        pod(
            "n",
            {"app": "shop", "rollouts-pod-template-hash": "c"},
            env={"VERSION": "2"},
            ready=False,
        )
    )
    snapshot = build_snapshot(
        [route("shop", ["shop.example"], None)], [service("app", {"app": "shop"})], pods
    )
    assert snapshot.plans() == {("demo", "shop"): {"1": 0.8, "2": 0.2}}
    assert pod_from_dict(pods[-1]).template == "demo/c"


def test_history_records_only_changes(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)
    pods = [
        pod("p", {"app": "shop-primary", "pod-template-hash": "p"}, env={"VERSION": "1"}),
        pod("c", {"app": "shop", "pod-template-hash": "c"}, env={"VERSION": "2"}),
    ]
    for at, (primary, canary) in enumerate([(80, 20), (80, 20), (100, 0)]):
        gateway.snapshot = build_snapshot([weighted(primary, canary)], SERVICES, pods)
        gateway.record_plans(float(at))
    assert list(gateway.plan_history) == [
        (0.0, "demo", "shop", {"1": 0.8, "2": 0.2}),
        (2.0, "demo", "shop", {"1": 1.0}),
    ]
