"""What the rollout e2e tests share: the operator process, background load, waiting."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidegate.adapters.gatewayapi import canary_weight_of
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import start_operator, stop_operator
from tidegate_devenv.traffic import LiveLoad, Sample

HOST = "shop.example.com"  # the example's hostname


def unique_host(namespace: str) -> str:
    """Hostnames are matched across namespaces, as in Gateway API: a test of its own gets one."""
    return f"{namespace}.{HOST}"


class Operator:
    """`tidegate run` for one namespace, as a real process that a test may kill."""

    def __init__(self, environment: EnvironmentInfo, namespace: str, log: Path) -> None:
        self.environment = environment
        self.namespace = namespace
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_operator(
            self.environment, self.log.parent, namespaces=[self.namespace], log=self.log
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_operator(self.process)


class BackgroundLoad(LiveLoad):
    """Steady requests through the gateway to the example's host, from a thread."""

    def __init__(self, gateway_url: str, host: str, rps: float = 60) -> None:
        super().__init__(gateway_url, host, rps=rps)
        self.start_in_thread()

    def samples_between(self, start: float, end: float) -> list[Sample]:
        """Samples whose responses arrived between two time.monotonic() readings."""
        return [s for s in self.samples if start <= s[0] <= end]

    def seen(self, version: str) -> bool:
        return any(v == version for _, v, _ in self.samples)


def get(kubectl: KubectlRunner, namespace: str, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl.check("get", "-n", namespace, *what, "-o", "json"))
    return found


def canary_weight_in_route(kubectl: KubectlRunner, namespace: str, route: str = "shop") -> int:
    """What the route gives shop-canary (0 before tidegate took the rule over)."""
    return canary_weight_of(get(kubectl, namespace, "httproute", route), 0, "shop-canary") or 0


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
