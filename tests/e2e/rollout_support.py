"""What the rollout e2e tests share: the example's objects, background load, reading them."""

from __future__ import annotations

import json
from typing import Any

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.routing import backend_weight
from tidegate_devenv.traffic import LiveLoad, Sample

HOST = "shop.example.com"  # the example's hostname


def unique_host(namespace: str) -> str:
    """Hostnames are matched across namespaces, as in Gateway API: a test of its own gets one."""
    return f"{namespace}.{HOST}"


class BackgroundLoad(LiveLoad):
    """Steady requests through the gateway to a test's host, from a thread."""

    def __init__(self, gateway_url: str, host: str, rps: float = 60) -> None:
        super().__init__(gateway_url, host, rps=rps)
        self.start_in_thread()

    def samples_between(self, start: float, end: float) -> list[Sample]:
        """Samples whose responses arrived between two time.monotonic() readings."""
        return [s for s in self.samples if start <= s[0] <= end]


def get(kubectl: KubectlRunner, namespace: str, *what: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(kubectl.check("get", "-n", namespace, *what, "-o", "json"))
    return found


def canary_weight_in_route(kubectl: KubectlRunner, namespace: str, route: str = "shop") -> int:
    """What the route gives shop-canary, as the dev gateway reads it (0 before tidegate took
    the rule over)."""
    return backend_weight(get(kubectl, namespace, "httproute", route), "shop-canary") or 0


def resource_versions(kubectl: KubectlRunner, namespace: str, kinds: str) -> dict[str, str]:
    """metadata.resourceVersion of every object of `kinds` (kubectl's comma-separated list)
    in the namespace, by kind/name: any write to one of them changes its entry."""
    items = get(kubectl, namespace, kinds)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


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
