"""Traffic routing through Gateway API HTTPRoutes.

Tidegate owns, in the rollout's HTTPRoute, the backendRefs of one rule (the live split) and
a RequestMirror filter on that rule that points at the canary; it adds and removes a rule of
its own, named `tidegate-header-route`, that sends requests matching the header route to the
canary. In the preview HTTPRoute, if there is one, it owns the backendRefs of the first rule.
Everything else in the routes is left as the user wrote it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tidegate.adapters.kube import Kube, KubeError, Obj
from tidegate.plan import HeaderMatch, Traffic
from tidegate.ports import RoutingError

HEADER_RULE = "tidegate-header-route"
_CONFLICT_RETRIES = 5
_MATCH_TYPES = {False: "Exact", True: "RegularExpression"}


def backend_ref(service: str, port: int, weight: int | None = None) -> Obj:
    ref: Obj = {"group": "", "kind": "Service", "name": service, "port": port}
    if weight is not None:
        ref["weight"] = weight
    return ref


def backend_refs(stable: str, canary: str, port: int, canary_weight: int) -> list[Obj]:
    return [
        backend_ref(stable, port, 100 - canary_weight),
        backend_ref(canary, port, canary_weight),
    ]


def _normalised(refs: list[Obj]) -> list[tuple[Any, ...]]:
    return [
        (r.get("group", ""), r.get("kind", "Service"), r["name"], r.get("port"), r.get("weight", 1))
        for r in refs
    ]


def _is_our_mirror(item: Obj, canary: str) -> bool:
    mirror = item.get("requestMirror") or {}
    return (
        item.get("type") == "RequestMirror" and mirror.get("backendRef", {}).get("name") == canary
    )


def _header_rule(base: Obj, matches: tuple[HeaderMatch, ...], canary: str, port: int) -> Obj:
    """A rule that sends what `base` matches, and also carries every header of `matches`, to
    the canary. More header matches win in Gateway API's precedence, so it takes precedence
    over `base` for those requests."""
    headers = [{"type": _MATCH_TYPES[m.regex], "name": m.name, "value": m.value} for m in matches]
    base_matches = base.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
    rule: Obj = {
        "name": HEADER_RULE,
        "matches": [
            {**copy.deepcopy(m), "headers": [*m.get("headers", []), *headers]} for m in base_matches
        ],
        # The weight written out, as the API server would default it, so that reading the
        # rule back compares equal and an idle rollout writes nothing.
        "backendRefs": [backend_ref(canary, port, 1)],
    }
    filters = [f for f in base.get("filters", []) if f.get("type") != "RequestMirror"]
    if filters:
        rule["filters"] = copy.deepcopy(filters)
    return rule


def _header_route_of(rule: Obj, base: Obj) -> tuple[HeaderMatch, ...]:
    """The header matches tidegate added to `rule` (those `base` does not have)."""
    first = (rule.get("matches") or [{}])[0]
    base_first = (base.get("matches") or [{}])[0]
    own = first.get("headers", [])[len(base_first.get("headers", [])) :]
    return tuple(
        HeaderMatch(h["name"], h["value"], regex=h.get("type") == "RegularExpression") for h in own
    )


def route_applied(route: Obj) -> bool:
    """Whether the Gateways the route is attached to report its current spec applied: each
    entry of status.parents has Accepted=True observed at the route's generation or later.
    No entry at all (no Gateway controller has looked at it yet) is not applied."""
    generation = int(route.get("metadata", {}).get("generation") or 0)
    parents = (route.get("status") or {}).get("parents") or []
    if not parents:
        return False
    for parent in parents:
        accepted = next(
            (c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"), None
        )
        if accepted is None or accepted.get("status") != "True":
            return False
        if int(accepted.get("observedGeneration") or 0) < generation:
            return False
    return True


class GatewayAPIRouter:
    """The `Router` port on Gateway API HTTPRoutes."""

    capabilities = frozenset({"weights", "switch", "header", "mirror", "preview"})

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        route: str,
        rule_index: int,
        stable_service: str,
        canary_service: str,
        port: int,
        preview_route: str | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.route = route
        self.rule_index = rule_index
        self.stable_service = stable_service
        self.canary_service = canary_service
        self.port = port
        self.preview_route = preview_route

    # -- reading --

    async def _get(self, name: str, fresh: bool = False) -> Obj:
        route = await self.kube.read("httproutes", self.namespace, name, fresh=fresh)
        if route is None:
            raise RoutingError(f"HTTPRoute {self.namespace}/{name} does not exist")
        return route

    def _rules(self, route: Obj, index: int) -> list[Obj]:
        rules: list[Obj] = route.get("spec", {}).get("rules", [])
        if index >= len(rules):
            raise RoutingError(
                f"HTTPRoute {route['metadata']['name']} has {len(rules)} rules; rule {index} "
                "does not exist"
            )
        return rules

    async def observe(self) -> Traffic | None:
        route = await self._get(self.route)
        rules = self._rules(route, self.rule_index)
        managed = rules[self.rule_index]
        refs = managed.get("backendRefs", [])
        weights = {r.get("name"): r.get("weight", 1) for r in refs}
        canary_weight = weights.get(self.canary_service, 0)
        if _normalised(refs) != _normalised(
            backend_refs(self.stable_service, self.canary_service, self.port, canary_weight)
        ):
            return None
        mirrors = [f for f in managed.get("filters", []) if _is_our_mirror(f, self.canary_service)]
        mirror = int(mirrors[0]["requestMirror"].get("percent", 100)) if mirrors else 0
        header_rules = [r for r in rules if r.get("name") == HEADER_RULE]
        header = _header_route_of(header_rules[0], managed) if header_rules else ()
        preview = False
        if self.preview_route is not None:
            preview_refs = self._rules(await self._get(self.preview_route), 0)[0].get(
                "backendRefs", []
            )
            names = [r.get("name") for r in preview_refs]
            if names not in ([self.stable_service], [self.canary_service]):
                return None
            preview = names == [self.canary_service]
        return Traffic(canary_weight, header, mirror, preview)

    async def applied(self) -> bool:
        names = [self.route] + ([self.preview_route] if self.preview_route else [])
        for name in names:
            route = await self.kube.read("httproutes", self.namespace, name)
            # A route that is gone routes nothing: nothing of it to wait for.
            if route is not None and not route_applied(route):
                return False
        return True

    # -- writing --

    async def apply(self, traffic: Traffic) -> bool:
        if not 0 <= traffic.canary_weight <= 100:
            raise ValueError(f"weight {traffic.canary_weight} is outside 0..100")
        changed = await self._edit(self.route, lambda route: self._live(route, traffic))
        if self.preview_route is not None:
            service = self.canary_service if traffic.preview else self.stable_service
            changed |= await self._edit(
                self.preview_route, lambda route: self._preview(route, service)
            )
        return changed

    def _live(self, route: Obj, traffic: Traffic) -> list[Obj]:
        rules = copy.deepcopy(self._rules(route, self.rule_index))
        managed = rules[self.rule_index]
        managed["backendRefs"] = backend_refs(
            self.stable_service, self.canary_service, self.port, traffic.canary_weight
        )
        filters = [
            f for f in managed.get("filters", []) if not _is_our_mirror(f, self.canary_service)
        ]
        if traffic.mirror_percent:
            filters.append(
                {
                    "type": "RequestMirror",
                    "requestMirror": {
                        "backendRef": backend_ref(self.canary_service, self.port),
                        "percent": traffic.mirror_percent,
                    },
                }
            )
        if filters:
            managed["filters"] = filters
        else:
            managed.pop("filters", None)
        rules = [r for r in rules if r.get("name") != HEADER_RULE]
        if traffic.header_route:
            rules.append(
                _header_rule(managed, traffic.header_route, self.canary_service, self.port)
            )
        return rules

    async def release(self, service: str) -> bool:
        # A route already gone (a namespace being deleted, an app pruned by Argo CD) holds
        # nothing of tidegate's: released.
        changed = False
        if await self.kube.read("httproutes", self.namespace, self.route) is not None:
            changed |= await self._edit(self.route, lambda route: self._released(route, service))
        preview = self.preview_route
        if preview and await self.kube.read("httproutes", self.namespace, preview) is not None:
            changed |= await self._edit(preview, lambda route: self._preview(route, service))
        return changed

    def _released(self, route: Obj, service: str) -> list[Obj]:
        """The routes as before tidegate: the rule to the user's Service, nothing of ours."""
        rules = [
            r
            for r in copy.deepcopy(self._rules(route, self.rule_index))
            if r.get("name") != HEADER_RULE
        ]
        managed = rules[self.rule_index]
        # The weight written out as the API server defaults it, so that the rule reads back
        # equal and a released route is not written again.
        managed["backendRefs"] = [backend_ref(service, self.port, 1)]
        filters = [
            f for f in managed.get("filters", []) if not _is_our_mirror(f, self.canary_service)
        ]
        if filters:
            managed["filters"] = filters
        else:
            managed.pop("filters", None)
        return rules

    def _preview(self, route: Obj, service: str) -> list[Obj]:
        rules = copy.deepcopy(self._rules(route, 0))
        rules[0]["backendRefs"] = [backend_ref(service, self.port, 1)]  # (as in `_released`)
        return rules

    async def _edit(self, name: str, edit: Callable[[Obj], list[Obj]]) -> bool:
        """Replace the route's rules with `edit(route)`; False when they were already so. A
        conflicting write by someone else is read again and retried."""
        for attempt in range(_CONFLICT_RETRIES):
            # After a conflict the cached copy is behind: ask the API server.
            route = await self._get(name, fresh=attempt > 0)
            rules = edit(route)
            if rules == route.get("spec", {}).get("rules", []):
                return False
            patch = {
                "metadata": {"resourceVersion": route["metadata"]["resourceVersion"]},
                "spec": {"rules": rules},
            }
            try:
                await self.kube.patch("httproutes", self.namespace, name, patch)
                return True
            except KubeError as error:
                if error.status != 409:
                    raise
        raise RoutingError(f"HTTPRoute {name} kept changing; not updated")
