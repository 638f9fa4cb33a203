"""Requests addressed to a Service by its cluster DNS name, as from a pod: the gateway sends
them to the Service's ready pods with no HTTPRoute; and the loadtester (`tidegate
loadtester`, with --connect-to) drives its jobs through the gateway that way."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from test_gateway_proxy import objects

from tidegate.loadtester import Loadtester
from tidegate_devenv.gateway import Gateway
from tidegate_devenv.routing import service_address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("demo-canary.demo.svc", ("demo", "demo-canary")),
        ("demo-canary.demo.svc:80", ("demo", "demo-canary")),
        ("demo-canary.demo.svc.cluster.local", ("demo", "demo-canary")),
        ("Demo-Canary.Demo.SVC.cluster.local.:8080", ("demo", "demo-canary")),
        ("demo.example", None),
        ("demo-canary.demo", None),
        ("a.b.demo.svc", None),
        ("demo-canary.demo.svc.example.com", None),
        ("-x.demo.svc", None),
    ],
)
def test_service_addresses(host: str, expected: tuple[str, str] | None) -> None:
    assert service_address(host) == expected


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def metrics_text(gateway: Gateway) -> str:
    async with TestClient(TestServer(gateway.metrics_app())) as client:
        return await (await client.get("/metrics")).text()


def served(text: str, backend: str, code: str) -> float:
    """gateway_requests_total of requests to a Service by name (route="")."""
    key = {
        "namespace": "demo",
        "route": "",
        "backend": backend,
        "code": code,
        "mirrored": "false",
    }
    return samples(text, "gateway_requests_total").get(tuple(sorted(key.items())), 0.0)


async def service_scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)
    try:
        # The route sends everything to stable: only a request by Service name reaches v2.
        gateway.update(**objects((1, 0)))
        await gateway.reconcile()
        async with TestClient(TestServer(gateway.app())) as client:
            for host in ("demo-canary.demo.svc", "demo-canary.demo.svc.cluster.local:80"):
                resp = await client.get("/", headers={"Host": host})
                assert resp.status == 200
                assert (await resp.json())["version"] == "v2"
                assert resp.headers["X-Tidegate-Backend"] == "demo/demo-canary"
            assert (await client.get("/", headers={"Host": "empty.demo.svc"})).status == 503
            assert (await client.get("/", headers={"Host": "nothing.demo.svc"})).status == 500
            resp = await client.get("/", headers={"Host": "demo.example"})
            assert (await resp.json())["version"] == "v1"
        text = await metrics_text(gateway)
        assert served(text, "demo-canary", "200") == 2
        assert served(text, "empty", "503") == 1
        assert served(text, "demo-stable", "200") == 0  # the route's request has its route
    finally:
        await gateway.close()


def test_a_request_to_a_service_by_name_reaches_its_pods_without_a_route(
    tmp_path: Path,
) -> None:
    asyncio.run(asyncio.wait_for(service_scenario(tmp_path), 60))


async def loadtester_scenario(state_dir: Path) -> None:
    gateway = Gateway(state_dir, grace=0.0, seed=5)
    server = TestServer(gateway.app())
    await server.start_server()
    assert server.port is not None
    loadtester = Loadtester(max_rate=200, max_duration=5, connect_to=("127.0.0.1", server.port))
    try:
        gateway.update(**objects((1, 0)))
        await gateway.reconcile()
        async with TestClient(TestServer(loadtester.app())) as client:
            job = {"id": "demo/demo", "url": "http://demo-canary.demo.svc:80/", "rate": 40}
            refused = await client.post("/jobs", json={**job, "rate": 500, "duration": 1})
            assert refused.status == 400
            assert "--max-rate 200" in (await refused.json())["error"]
            refused = await client.post("/jobs", json={**job, "duration": 60})
            assert "--max-duration 5" in (await refused.json())["error"]
            assert (await client.post("/jobs", json={**job, "duration": 5})).status == 201
            # Replaced: the same job, with a new end (and rate) from now.
            replaced = await client.post("/jobs", json={**job, "rate": 50, "duration": 0.6})
            assert replaced.status == 200 and (await replaced.json())["replaced"] is True
            listed = (await (await client.get("/jobs")).json())["jobs"]
            assert [(j["id"], j["rate"]) for j in listed] == [("demo/demo", 50)]
            assert listed[0]["remainingSeconds"] <= 0.6
            running = loadtester.jobs["demo/demo"].task
            assert running is not None
            await running  # it ends by itself, at its duration
            assert (await (await client.get("/jobs")).json())["jobs"] == []
            own = await (await client.get("/metrics")).text()
        sent = samples(own, "loadtester_requests_total")
        ok = sent[(("code", "200"), ("job", "demo/demo"))]
        assert 15 <= ok <= 40, sent  # 50/s for 0.6 s, with its start
        assert set(sent) == {(("code", "200"), ("job", "demo/demo"))}
        # Every one of them went to the canary's Service by name, kept its Host.
        assert served(await metrics_text(gateway), "demo-canary", "200") == ok
    finally:
        await loadtester.close()
        await server.close()
        await gateway.close()


def test_the_loadtester_drives_a_job_through_the_gateway_until_it_ends(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(loadtester_scenario(tmp_path), 60))


async def guarded_scenario() -> None:
    loadtester = Loadtester(max_rate=10, max_duration=5, max_jobs=1, token="s3cret")
    try:
        async with TestClient(TestServer(loadtester.app())) as client:
            job = {"id": "a/a", "url": "http://127.0.0.1:9/", "rate": 1, "duration": 1}
            wrong = {"Authorization": "Bearer wrong"}
            assert (await client.post("/jobs", json=job)).status == 401
            assert (await client.post("/jobs", json=job, headers=wrong)).status == 401
            assert (await client.get("/jobs")).status == 401
            auth = {"Authorization": "Bearer s3cret"}
            assert (await client.post("/jobs", json=job, headers=auth)).status == 201
            # One job at most: another is refused, the running one may still be renewed.
            full = await client.post("/jobs", json={**job, "id": "b/b"}, headers=auth)
            assert full.status == 503 and "1 jobs run already" in (await full.json())["error"]
            assert (await client.post("/jobs", json=job, headers=auth)).status == 200
            listed = await client.get("/jobs", headers=auth)
            assert [j["id"] for j in (await listed.json())["jobs"]] == ["a/a"]
            too_big = await client.post("/jobs", data=b"{" + b" " * 100_000 + b"}", headers=auth)
            assert too_big.status == 413
    finally:
        await loadtester.close()


def test_a_loadtester_with_a_token_takes_jobs_only_with_it_and_only_so_many() -> None:
    asyncio.run(asyncio.wait_for(guarded_scenario(), 30))
