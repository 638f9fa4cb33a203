"""The local data plane measured by a real Prometheus: two demo-app processes scraped
through file_sd at a 1s interval, load from loadgen, counts checked with PromQL.

Needs no control plane, only the prometheus binary.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from prometheus_api_client import PrometheusConnect

from tidegate_devenv import prometheus
from tidegate_devenv.cluster import free_port, http_ok
from tidegate_devenv.demoprocs import child_env
from tidegate_devenv.loadgen import LoadResult, generate
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.waiting import wait_until

pytestmark = pytest.mark.e2e


class Processes:
    """Children of this test, each in a session of its own, all stopped at the end whatever
    happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, cmd: list[str], stdout: int | IO[bytes] = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd, stdout=stdout, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_process_group(proc, 10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    table = Processes()
    try:
        yield table
    finally:
        table.stop_all()


def start_demoapp(processes: Processes, version: str, error_rate: float) -> str:
    cmd = [sys.executable, "-m", "tidegate_devenv.demoapp", "--port", "0", "--version", version]
    cmd += ["--error-rate", str(error_rate), "--latency-ms", "1"]
    proc = processes.start(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the app prints where it listens once it does
    return str(json.loads(line)["listening"])


def promql_counts(
    prom: PrometheusConnect, query: str, labels: tuple[str, ...]
) -> dict[tuple[str, ...], int]:
    return {
        tuple(item["metric"].get(label, "") for label in labels): int(float(item["value"][1]))
        for item in prom.custom_query(query)
    }


def expected_counts(result: LoadResult) -> dict[tuple[str, ...], int]:
    return {(str(version), str(code)): n for (version, code), n in result.by_version_code.items()}


def test_prometheus_counts_match_loadgen(tmp_path: Path, processes: Processes) -> None:
    try:
        binary = prometheus.prometheus_binary()
    except prometheus.PrometheusNotFound as exc:
        pytest.skip(str(exc))
    v1 = start_demoapp(processes, "v1", 0.0)
    v2 = start_demoapp(processes, "v2", 0.25)

    targets_dir = tmp_path / "prometheus-targets"
    targets_dir.mkdir()
    targets = [
        {"targets": [v1], "labels": {"namespace": "demo", "service": "demo", "version": "v1"}},
        {"targets": [v2], "labels": {"namespace": "demo", "service": "demo", "version": "v2"}},
    ]
    (targets_dir / "demo-apps.json").write_text(json.dumps(targets))
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus.render_config("1s", [], targets_dir))
    url = f"http://127.0.0.1:{free_port()}"
    cmd = prometheus.prometheus_command(
        binary, config, tmp_path / "data", url.removeprefix("http://")
    )
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        processes.start(cmd, stdout=out)
    wait_until(lambda: http_ok(f"{url}/-/ready"), "prometheus's /-/ready", 60, log)

    async def load() -> tuple[LoadResult, LoadResult]:
        return await asyncio.gather(
            generate(f"http://{v1}/", host="demo.example", count=120, rps=200),
            generate(f"http://{v2}/", host="demo.example", count=80, rps=200),
        )

    first, second = asyncio.run(load())
    assert first.total == 120 and second.total == 80
    assert first.by_version == {"v1": 120}
    assert second.by_version == {"v2": 80}
    expected = expected_counts(first) | expected_counts(second)

    prom = PrometheusConnect(url=url, disable_ssl=True)
    query = 'sum by (version, code) (demo_http_requests_total{job="demo-apps"})'
    # Scraped every second: the counts become what was sent, or the wait fails showing them.
    wait_until(
        lambda: promql_counts(prom, query, ("version", "code")),
        "Prometheus to count what loadgen sent",
        30,
        log,
        until=lambda seen: seen == expected,
        interval=0.5,
    )

    by_version = promql_counts(
        prom, 'sum by (version) (demo_http_requests_total{job="demo-apps"})', ("version",)
    )
    assert by_version == {("v1",): 120, ("v2",): 80}
    up = promql_counts(prom, 'up{job="demo-apps"}', ("version",))
    assert up == {("v1",): 1, ("v2",): 1}
