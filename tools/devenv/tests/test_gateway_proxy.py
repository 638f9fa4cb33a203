"""The gateway's request path and process management, fed cluster objects directly
(no API server) and proxying to real demo-app subprocesses."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from tidegate_routes import NAMESPACE, written

from tidegate.plan import HeaderMatch, Traffic
from tidegate_devenv.gateway import Gateway


def objects(weights: tuple[int, int]) -> dict[str, list[dict[str, Any]]]:
    def pod(name: str, track: str, version: str) -> dict[str, Any]:
        return {
            "metadata": {
                "namespace": "demo",
                "name": name,
                "labels": {"app": "demo", "track": track, "pod-template-hash": track},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "demo:x",
                        "env": [{"name": "VERSION", "value": version}],
                    }
                ]
            },
            "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def service(name: str, selector: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"namespace": "demo", "name": name}, "spec": {"selector": selector}}

    route = {
        "metadata": {"namespace": "demo", "name": "demo"},
        "spec": {
            "hostnames": ["demo.example"],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "demo-stable", "port": 80, "weight": weights[0]},
                        {"name": "demo-canary", "port": 80, "weight": weights[1]},
                    ]
                }
            ],
        },
    }
    return {
        "routes": [route],
        "services": [
            service("demo-stable", {"app": "demo", "track": "stable"}),
            service("demo-canary", {"app": "demo", "track": "canary"}),
            service("empty", {"app": "nothing"}),
        ],
        "pods": [pod("s1", "stable", "v1"), pod("s2", "stable", "v1"), pod("c1", "canary", "v2")],
    }


async def scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)
    try:
        gateway.update(**objects((80, 20)))
        await gateway.reconcile()
        async with TestClient(TestServer(gateway.app())) as client:
            versions: Counter[str] = Counter()
            for _ in range(200):
                resp = await client.get("/", headers={"Host": "demo.example"})
                assert resp.status == 200
                versions[(await resp.json())["version"]] += 1
            assert 20 <= versions["v2"] <= 65, versions

            # Both demo apps are published for Prometheus with their labels.
            targets = json.loads((state_dir / "prometheus-targets/demo-apps.json").read_text())
            labels = sorted((t["labels"]["service"], t["labels"]["version"]) for t in targets)
            assert labels == [("demo-canary", "v2"), ("demo-stable", "v1")]

            # A weight change applies to the very next request.
            gateway.update(**objects((0, 1)))
            for _ in range(20):
                resp = await client.get("/x", headers={"Host": "demo.example"})
                assert (await resp.json())["version"] == "v2"

            resp = await client.get("/", headers={"Host": "unknown.example"})
            assert resp.status == 404

            gateway.update(**objects((0, 0)))
            assert (await client.get("/", headers={"Host": "demo.example"})).status == 500

            # Ready pods gone: 503, and the processes are stopped after the grace period.
            gone = objects((1, 1))
            gone["pods"] = []
            gateway.update(**gone)
            assert (await client.get("/", headers={"Host": "demo.example"})).status == 503
            await gateway.reconcile()  # marks unused
            await gateway.reconcile()  # grace 0: reaped
            assert not gateway.pool.processes
            assert json.loads((state_dir / "prometheus-targets/demo-apps.json").read_text()) == []

            metrics = gateway.metrics_app()
            async with TestClient(TestServer(metrics)) as mclient:
                text = await (await mclient.get("/metrics")).text()
            assert 'backend="demo-canary",code="200"' in text
            assert "gateway_request_duration_seconds_bucket" in text
    finally:
        await gateway.close()
    assert not gateway.pool.processes


def test_gateway_routes_by_weight_to_demo_processes(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(scenario(tmp_path), 60))


# --- header routes, the preview route and mirrors, as tidegate writes them ---------------


def shop_cluster(
    routes: list[dict[str, Any]], canary_env: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Namespace shop: Services shop-stable (v1), shop-canary (v2, with `canary_env`) and
    shop-empty (no pods), one pod each for the first two, and `routes`."""
    env = {"VERSION": "v2", **(canary_env or {})}

    def pod(track: str, variables: dict[str, str]) -> dict[str, Any]:
        # The template hash follows the env, as a Deployment's would.
        template = f"{track}-{abs(hash(tuple(sorted(variables.items())))) % 10**6}"
        return {
            "metadata": {
                "namespace": NAMESPACE,
                "name": f"{track}-pod",
                "labels": {"app": "shop", "track": track, "pod-template-hash": template},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "shop:x",
                        "env": [{"name": k, "value": v} for k, v in variables.items()],
                    }
                ]
            },
            "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
        }

    def service(name: str, track: str) -> dict[str, Any]:
        selector = {"app": "shop", "track": track}
        return {"metadata": {"namespace": NAMESPACE, "name": name}, "spec": {"selector": selector}}

    return {
        "routes": routes,
        "services": [
            service("shop-stable", "stable"),
            service("shop-canary", "canary"),
            service("shop-empty", "none"),
        ],
        "pods": [pod("stable", {"VERSION": "v1"}), pod("canary", env)],
    }


def requests_counted(gateway: Gateway, **labels: str) -> float:
    """gateway_requests_total summed over the series that have `labels`."""
    return sum(
        sample.value
        for family in gateway.metrics.registry.collect()
        for sample in family.samples
        if sample.name == "gateway_requests_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def served_by_app(gateway: Gateway, version: str) -> float:
    """The requests the demo app playing `version` says it served."""
    (address,) = [p.address for p in gateway.pool.processes.values() if p.spec.version == version]
    async with aiohttp.ClientSession() as session, session.get(f"http://{address}/metrics") as r:
        text = await r.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "demo_http_requests_total"
    )


async def versions_seen(client: TestClient[Any, Any], count: int, host: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        resp = await client.post("/cart?item=1", data=b"{}", headers={"Host": host})
        assert resp.status == 200
        seen[(await resp.json())["version"]] += 1
    return seen


async def mirror_share_scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)

    async def with_mirror(percent: int, requests: int) -> float:
        """Mirror `percent` of `requests` requests; how many copies the canary got."""
        routes = await written(Traffic(mirror_percent=percent))
        gateway.update(**shop_cluster(routes))
        before = requests_counted(gateway, backend="shop-canary", mirrored="true")
        assert await versions_seen(client, requests, "shop.example") == {"v1": requests}
        await gateway.mirrors_done()
        return requests_counted(gateway, backend="shop-canary", mirrored="true") - before

    try:
        gateway.update(**shop_cluster(await written(Traffic())))
        await gateway.reconcile()
        async with TestClient(TestServer(gateway.app())) as client:
            assert await with_mirror(100, 30) == 30
            # The copies did reach the canary's app, and were counted as 200s.
            assert await served_by_app(gateway, "v2") == 30
            assert requests_counted(gateway, backend="shop-canary", code="200") == 30
            # Mirroring is not routing: no request was answered by the canary.
            assert requests_counted(gateway, backend="shop-canary", mirrored="false") == 0
            assert requests_counted(gateway, backend="shop-stable", mirrored="false") == 30
            assert requests_counted(gateway, backend="shop-stable", mirrored="true") == 0

            assert await with_mirror(0, 30) == 0
            half = await with_mirror(50, 200)
            assert 70 <= half <= 130, half
    finally:
        await gateway.close()


def test_mirror_copies_its_share_of_requests(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(mirror_share_scenario(tmp_path), 60))


def mirrors_to(*services: str) -> list[dict[str, Any]]:
    ref = {"group": "", "kind": "Service", "port": 80}
    return [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {**ref, "name": name}}}
        for name in services
    ]


def mirrored_route(*services: str) -> dict[str, Any]:
    rule = {"backendRefs": [{"name": "shop-stable", "port": 80}], "filters": mirrors_to(*services)}
    return {
        "metadata": {"namespace": NAMESPACE, "name": "shop"},
        "spec": {"hostnames": ["shop.example"], "rules": [rule]},
    }


async def failing_mirror_scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)
    try:
        # The canary fails every request; shop-empty has no pods; shop-gone does not exist.
        routes = [mirrored_route("shop-canary", "shop-empty", "shop-gone")]
        gateway.update(**shop_cluster(routes, {"ERROR_RATE": "1"}))
        await gateway.reconcile()
        async with TestClient(TestServer(gateway.app())) as client:
            assert await versions_seen(client, 10, "shop.example") == {"v1": 10}
            await gateway.mirrors_done()
            assert requests_counted(gateway, backend="shop-canary", code="500") == 10
            assert requests_counted(gateway, backend="shop-empty", code="503") == 10
            assert requests_counted(gateway, backend="shop-gone", code="500") == 10
            assert requests_counted(gateway, mirrored="true") == 30

            # A canary that takes seconds to answer: the client's answer does not wait.
            gateway.update(**shop_cluster([mirrored_route("shop-canary")], {"LATENCY_MS": "20000"}))
            await gateway.reconcile()
            assert await versions_seen(client, 1, "shop.example") == {"v1": 1}
            assert gateway.mirrors_in_flight == 1
    finally:
        await gateway.close()  # and with it the copy still waiting for its answer
    assert gateway.mirrors_in_flight == 0


def test_clients_get_only_the_primary_answer_whatever_the_mirror_does(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(failing_mirror_scenario(tmp_path), 60))


async def header_and_preview_scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)
    header_route = (
        HeaderMatch("X-Canary", "always"),
        HeaderMatch("Cookie", r"(^|;\s*)canary=1(;|$)", regex=True),
    )
    routes = await written(Traffic(canary_weight=0, header_route=header_route, preview=True))
    try:
        gateway.update(**shop_cluster(routes))
        await gateway.reconcile()
        async with TestClient(TestServer(gateway.app())) as client:

            async def version(host: str, headers: dict[str, str]) -> str:
                resp = await client.get("/", headers={"Host": host, **headers})
                assert resp.status == 200
                return str((await resp.json())["version"])

            tester = {"X-Canary": "always", "Cookie": "session=9; canary=1"}
            assert await version("shop.example", tester) == "v2"
            assert await version("shop.example", {"X-Canary": "always"}) == "v1"
            assert await version("shop.example", {}) == "v1"
            assert await version("preview.shop.example", {}) == "v2"
            # Per route and backend, as before.
            assert requests_counted(gateway, route="shop", backend="shop-canary") == 1
            assert requests_counted(gateway, route="shop", backend="shop-stable") == 2
            assert requests_counted(gateway, route="shop-preview", backend="shop-canary") == 1
    finally:
        await gateway.close()


def test_header_route_and_preview_route(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(header_and_preview_scenario(tmp_path), 60))
