"""Outside calls a tenant points at are bounded: a Prometheus that answers 200 MB, one that
drips a byte a second, a webhook that never answers and a loadtester that answers 1 GB, all
at once in two tenants' rollouts, leave the operator's memory far below its limit, and a third
tenant's healthy rollout is promoted in the time it takes alone."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import yaml
from rollout_support import BackgroundLoad, route_host, scratch_namespace, set_version

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

MIB = 1024 * 1024
LIMIT_MIB = 512  # the chart's and kustomize's memory limit
# The healthy rollout alone: three 4 s steps, each measured twice, takes 30-40 s here.
ON_TIME = 120


class Hostile(BaseHTTPRequestHandler):
    """/big: 200 MB of answer, fast. /drip: a byte a second. /hang: no answer at all.
    /huge: HTTP 500 with 1 GB of body."""

    protocol_version = "HTTP/1.1"
    served: ClassVar[dict[str, int]] = {}

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        path = self.path.split("?")[0].rstrip("/").split("/")[1]
        Hostile.served[path] = Hostile.served.get(path, 0) + 1
        with contextlib.suppress(OSError, ValueError):
            if path == "hang":
                time.sleep(600)
            elif path == "drip":
                self._send(200, 10**6, b"x", pause=1.0)
            elif path == "big":
                self._send(200, 200 * MIB, b"0" * MIB)
            else:
                self._send(500, 1024 * MIB, b"0" * MIB)

    def _send(self, code: int, size: int, chunk: bytes, pause: float = 0.0) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        sent = 0
        while sent < size:
            self.wfile.write(chunk)
            sent += len(chunk)
            if pause:
                time.sleep(pause)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the operator hangs up on purpose: a broken pipe is the point, not news


@contextlib.contextmanager
def hostile_server() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class PeakRss:
    """The highest resident set size of process `pid`, sampled every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> int:
        self._stop.set()
        return self.peak


def apply_shop(
    kubectl: KubectlRunner, namespace: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [route_host(namespace, "shop")]
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    edit(rollout["spec"])
    docs = yaml.safe_dump_all([*app, rollout])
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=docs)


def metrics(count: int) -> list[dict[str, Any]]:
    return [{"name": f"m{i}", "query": "up", "thresholdRange": {"max": 1}} for i in range(count)]


def hostile(spec: dict[str, Any], prometheus: str, count: int) -> None:
    """Measured against `prometheus` for as long as the test runs: no limit is reached."""
    spec["analysis"].update(
        prometheus={"address": prometheus},
        metrics=metrics(count),
        failureLimit=1000,
        inconclusiveLimit=1000,
    )
    spec["progressDeadlineSeconds"] = 600


def told(kubectl: KubectlRunner, namespace: str, text: str) -> dict[str, Any]:
    """The rollout's status once a metric's message says `text`."""

    def status() -> dict[str, Any]:
        return read_status(kubectl, namespace, "shop")

    def says(found: dict[str, Any]) -> bool:
        return any(text in m.get("message", "") for m in found.get("metrics", []))

    found: dict[str, Any] = wait_until(status, f"{namespace}: {text}", 60, until=says)
    return found


def test_hostile_endpoints_cost_little_memory_and_hold_up_no_other_tenant(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(hostile_server())
        big, drip, hung, healthy = (
            stack.enter_context(scratch_namespace(kubectl, prefix))
            for prefix in ("big", "drip", "hung", "ok")
        )

        def bigger(spec: dict[str, Any]) -> None:
            hostile(spec, f"{url}/big", 8)
            spec["analysis"]["load"] = {
                "url": "http://{{ canaryService }}.{{ namespace }}.svc:80/",
                "rate": 1,
                "loadtester": f"{url}/huge",
            }

        def slower(spec: dict[str, Any]) -> None:
            hostile(spec, f"{url}/drip", 16)

        def hanging(spec: dict[str, Any]) -> None:
            # Its own rollout waits for it (up to the timeout, each interval); nobody else's.
            spec["webhooks"] = [
                {"name": "hang", "type": "rollout", "url": f"{url}/hang", "timeout": "5m"}
            ]

        apply_shop(kubectl, big, bigger)
        apply_shop(kubectl, drip, slower)
        apply_shop(kubectl, hung, hanging)
        apply_shop(kubectl, healthy, lambda spec: None)
        operator = start_operator(
            environment, tmp_path / "operator.log", namespaces=[big, drip, hung, healthy]
        )
        stack.callback(operator.stop)
        # The healthy tenant's users: its analysis measures their requests.
        load = BackgroundLoad(environment.gateway_url, route_host(healthy, "shop"))
        stack.callback(load.stop)
        for namespace in (big, drip, hung, healthy):
            wait_until(
                lambda ns=namespace: read_status(kubectl, ns, "shop").get("phase"),
                f"{namespace}/shop initialised", 60, until=lambda phase: phase == "Initialized",
            )  # fmt: skip
        rss = PeakRss(operator.process.pid)
        # The hostile rollouts start first, and are measuring when the healthy one starts.
        set_version(kubectl, big, "1.1.0")
        set_version(kubectl, drip, "1.1.0")
        set_version(kubectl, hung, "1.1.0")
        wait_until(
            lambda: all(Hostile.served.get(p, 0) for p in ("big", "drip", "hang")),
            "the hostile endpoints asked", 60,
        )  # fmt: skip
        began = time.monotonic()
        set_version(kubectl, healthy, "1.1.0")
        done = wait_until(
            lambda: read_status(kubectl, healthy, "shop").get("phase"),
            "the healthy rollout promoted", ON_TIME,
            until=lambda phase: phase in ("Succeeded", "Failed"),
        )  # fmt: skip
        took = time.monotonic() - began
        assert done == "Succeeded"
        # What the hostile rollouts are told, still measuring: the limit, never what was sent.
        big_status = told(kubectl, big, f"larger than {4 * MIB} bytes")
        drip_status = told(kubectl, drip, "no whole answer within 10s")
        assert big_status["phase"] == drip_status["phase"] == "Progressing"
        assert "0000" not in str(big_status) and "xxxx" not in str(drip_status)
        peak = rss.stop()
        print(
            f"healthy rollout promoted in {took:.1f} s beside hostile endpoints; operator peak "
            f"RSS {peak / MIB:.0f} MiB (limit {LIMIT_MIB} MiB); served {Hostile.served}"
        )
        assert peak < LIMIT_MIB * MIB / 2, peak / MIB
        assert operator.process.poll() is None
