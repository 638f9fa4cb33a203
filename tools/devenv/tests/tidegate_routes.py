"""HTTPRoutes as tidegate's Gateway API router writes them, for the gateway's tests: the
gateway must serve what the operator really writes, not what a test supposes it writes."""

from __future__ import annotations

import copy
from typing import Any

from tidegate.adapters.gatewayapi import GatewayAPIRouter
from tidegate.plan import Traffic

Obj = dict[str, Any]
NAMESPACE = "shop"


class _Routes:
    """Just enough of `tidegate.adapters.kube.Kube` for the router: an HTTPRoute read, and
    a merge patch of its spec.rules."""

    def __init__(self, routes: list[Obj]) -> None:
        self.routes = {r["metadata"]["name"]: r for r in routes}

    async def read(
        self, kind: str, namespace: str, name: str, *, fresh: bool = False
    ) -> Obj | None:
        found = self.routes.get(name)
        return copy.deepcopy(found) if found is not None else None

    async def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> None:
        self.routes[name]["spec"]["rules"] = copy.deepcopy(patch["spec"]["rules"])


def user_route(
    name: str, hostname: str, backend: str, created: str, rules: list[Obj] | None = None
) -> Obj:
    """An HTTPRoute as a user writes it, before tidegate takes its first rule over."""
    return {
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "resourceVersion": "1",
            "creationTimestamp": created,
        },
        "spec": {
            "hostnames": [hostname],
            "rules": rules or [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    }


async def written(traffic: Traffic, rules: list[Obj] | None = None) -> list[Obj]:
    """Routes `shop` (shop.example, its rule 0 managed) and `shop-preview`
    (preview.shop.example) once the router has applied `traffic` to them."""
    client = _Routes(
        [
            user_route("shop", "shop.example", "shop", "2024-01-01T00:00:00Z", rules),
            user_route("shop-preview", "preview.shop.example", "shop", "2024-01-02T00:00:00Z"),
        ]
    )
    router = GatewayAPIRouter(
        client,  # type: ignore[arg-type]
        NAMESPACE,
        "shop",
        0,
        "shop-stable",
        "shop-canary",
        80,
        preview_route="shop-preview",
    )
    await router.apply(traffic)
    return list(client.routes.values())
