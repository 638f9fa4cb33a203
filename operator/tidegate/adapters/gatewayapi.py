"""Traffic routing through a Gateway API HTTPRoute: tidegate owns one rule's backendRefs."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from tidegate.adapters.kube import HTTPRoute, Obj, get_or_none
from tidegate.ports import RoutingError

_CONFLICT_RETRIES = 5


def backend_refs(stable: str, canary: str, port: int, canary_weight: int) -> list[Obj]:
    return [
        {
            "group": "",
            "kind": "Service",
            "name": stable,
            "port": port,
            "weight": 100 - canary_weight,
        },
        {"group": "", "kind": "Service", "name": canary, "port": port, "weight": canary_weight},
    ]


def _normalised(refs: list[Obj]) -> list[tuple[Any, ...]]:
    return [
        (r.get("group", ""), r.get("kind", "Service"), r["name"], r.get("port"), r.get("weight", 1))
        for r in refs
    ]


class GatewayAPIRouter:
    """The `Router` port on a Gateway API HTTPRoute."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        route: str,
        rule_index: int,
        stable_service: str,
        canary_service: str,
        port: int,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.route = route
        self.rule_index = rule_index
        self.stable_service = stable_service
        self.canary_service = canary_service
        self.port = port

    async def set_canary_weight(self, weight: int) -> bool:
        """Give the canary `weight` percent and the stable the rest; False when already so."""
        if not 0 <= weight <= 100:
            raise ValueError(f"weight {weight} is outside 0..100")
        desired = backend_refs(self.stable_service, self.canary_service, self.port, weight)
        for _ in range(_CONFLICT_RETRIES):
            route = await get_or_none(self.client, HTTPRoute, self.route, self.namespace)
            if route is None:
                raise RoutingError(f"HTTPRoute {self.namespace}/{self.route} does not exist")
            rules = route.get("spec", {}).get("rules", [])
            if self.rule_index >= len(rules):
                raise RoutingError(
                    f"HTTPRoute {self.route} has {len(rules)} rules; ruleIndex "
                    f"{self.rule_index} does not exist"
                )
            current = rules[self.rule_index].get("backendRefs", [])
            if _normalised(current) == _normalised(desired):
                return False
            rules[self.rule_index]["backendRefs"] = desired
            patch = {
                "metadata": {"resourceVersion": route["metadata"]["resourceVersion"]},
                "spec": {"rules": rules},
            }
            try:
                await self.client.patch(
                    HTTPRoute,
                    self.route,
                    patch,
                    namespace=self.namespace,
                    patch_type=PatchType.MERGE,
                )
                return True
            except ApiError as error:
                if error.status.code != 409:
                    raise
        raise RoutingError(f"HTTPRoute {self.route} kept changing; weight {weight} not set")
