"""The gateway's request path and process management, fed cluster objects directly
(no API server) and proxying to real demo-app subprocesses."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

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
