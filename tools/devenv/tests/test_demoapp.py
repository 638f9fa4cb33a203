"""The demo app, served in process on a loopback port."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from tidegate_devenv.demoapp import build_app
from tidegate_devenv.demoprocs import DemoPool, start_demoapp, start_spare, stop_process
from tidegate_devenv.routing import DemoSpec


def counter(metrics: str, version: str, code: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "demo_http_requests_total" and sample.labels == {
                "version": version,
                "code": code,
            }:
                return float(sample.value)
    return 0.0


async def exercise(version: str, error_rate: float, n: int) -> tuple[list[int], set[str], str]:
    async with TestClient(TestServer(build_app(version, error_rate, latency_ms=1))) as client:
        codes: list[int] = []
        versions: set[str] = set()
        for i in range(n):
            resp = await client.get(f"/some/path/{i}")
            codes.append(resp.status)
            versions.add((await resp.json())["version"])
        health = await client.get("/healthz")
        assert health.status == 200
        metrics = await (await client.get("/metrics")).text()
        return codes, versions, metrics


def test_error_rate_zero_always_succeeds() -> None:
    codes, versions, metrics = asyncio.run(exercise("v1", 0.0, 20))
    assert codes == [200] * 20
    assert versions == {"v1"}
    assert counter(metrics, "v1", "200") == 20
    assert counter(metrics, "v1", "500") == 0
    assert 'demo_http_request_duration_seconds_count{version="v1"} 20.0' in metrics


def test_error_rate_one_always_fails() -> None:
    codes, versions, metrics = asyncio.run(exercise("v2", 1.0, 15))
    assert codes == [500] * 15
    assert versions == {"v2"}
    assert counter(metrics, "v2", "500") == 15
    assert counter(metrics, "v2", "200") == 0
    # Health checks and scrapes are not counted as traffic.
    assert "/healthz" not in metrics


def test_latency_is_applied() -> None:
    async def timed() -> float:
        async with TestClient(TestServer(build_app("v3", 0.0, latency_ms=50))) as client:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await client.get("/")
            return loop.time() - start

    assert asyncio.run(timed()) >= 0.035


async def configure_a_spare() -> tuple[bool, int, str]:
    spare = await start_spare()
    try:
        started = await start_demoapp("ns/abc", DemoSpec("9.9.9", 0.0, 1.0), spare)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{started.address}/") as response,
        ):
            return started.proc is spare, response.status, (await response.json())["version"]
    finally:
        await stop_process(spare)


def test_a_spare_serves_the_template_it_is_given() -> None:
    assert asyncio.run(configure_a_spare()) == (True, 200, "9.9.9")


async def two_templates_from_two_spares() -> tuple[bool, bool, int]:
    pool = DemoPool(spares=2)
    try:
        pool.keep_spare()
        spares = await asyncio.gather(*pool._spares)
        first, second = await asyncio.gather(
            pool.ensure("ns/a", DemoSpec("1.0.0", 0.0, 1.0)),
            pool.ensure("ns/b", DemoSpec("1.1.0", 0.0, 1.0)),
        )
        # Both came warm, and two fresh spares are on their way for the next ones.
        return first.proc in spares, second.proc in spares, len(pool._spares)
    finally:
        await pool.close()


def test_a_pool_keeps_as_many_spares_as_asked_and_uses_them_first() -> None:
    assert asyncio.run(two_templates_from_two_spares()) == (True, True, 2)
