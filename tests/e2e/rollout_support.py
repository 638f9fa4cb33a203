"""What the rollout e2e tests share: the operator process, background load, waiting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidegate.dev.cluster import KubectlRunner, free_port, http_ok, wait_until
from tidegate.dev.environment import EnvironmentInfo
from tidegate.dev.loadgen import LoadResult, generate

EXAMPLE = Path(__file__).parents[2] / "examples" / "canary"
HOST = "shop.example.com"


class Operator:
    """`tidegate run` for one namespace, as a real process that a test may kill."""

    def __init__(self, environment: EnvironmentInfo, namespace: str, log: Path) -> None:
        self.environment = environment
        self.namespace = namespace
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        health = f"127.0.0.1:{free_port()}"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "tidegate", "run", "-n", self.namespace,
                    f"--prometheus-url={self.environment.prometheus_url}",
                    f"--health-listen={health}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": self.environment.kubeconfig},
            )  # fmt: skip
        wait_until(lambda: http_ok(f"http://{health}/readyz"), "operator", 30, self.log)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class BackgroundLoad:
    """Steady requests through the gateway; samples can be read while it runs."""

    def __init__(self, gateway_url: str, rps: float = 60, seconds: float = 300) -> None:
        self.result = LoadResult()
        self._stop = threading.Event()
        self.started = time.monotonic()
        load = generate(
            gateway_url,
            host=HOST,
            duration=seconds,
            rps=rps,
            result=self.result,
            stop=self._stop,
        )
        self._thread = threading.Thread(target=asyncio.run, args=(load,), daemon=True)
        self._thread.start()

    def samples_between(self, start: float, end: float) -> list[tuple[float, str | None, int]]:
        """Samples whose responses arrived between two time.monotonic() readings."""
        return [s for s in list(self.result.samples) if start <= self.started + s[0] <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def get(kubectl: KubectlRunner, namespace: str, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl.check("get", "-n", namespace, *what, "-o", "json"))
    return found


def rollout_status(kubectl: KubectlRunner, namespace: str, name: str = "shop") -> dict[str, Any]:
    status: dict[str, Any] = get(kubectl, namespace, "progressiverollout", name).get("status", {})
    return status


def canary_weight_in_route(kubectl: KubectlRunner, namespace: str, route: str = "shop") -> int:
    refs = get(kubectl, namespace, "httproute", route)["spec"]["rules"][0]["backendRefs"]
    return next((int(r.get("weight", 1)) for r in refs if r["name"].endswith("-canary")), 0)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 90, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def set_version(
    kubectl: KubectlRunner, namespace: str, version: str, error_rate: float = 0.0
) -> None:
    kubectl.check(
        "set", "env", "-n", namespace, "deployment/shop",
        f"VERSION={version}", f"ERROR_RATE={error_rate}",
    )  # fmt: skip


def events(kubectl: KubectlRunner, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(kubectl, namespace, "events")["items"]
    return [e for e in items if e["involvedObject"].get("kind") == "ProgressiveRollout"]


def prometheus_has_series(prometheus_url: str, query: str) -> bool:
    url = f"{prometheus_url}/api/v1/query?query={urllib.request.quote(query)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(json.load(response)["data"]["result"])
