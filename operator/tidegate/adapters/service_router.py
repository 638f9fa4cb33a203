"""Traffic routing by a Service's selector: the Service `spec.service.name` selects either
the stable or the canary copy's pods (by the copy label tidegate's own `<service>-stable` or
`<service>-canary` selects), so all live traffic moves at once and nothing else is needed in
front of it. An optional preview Service is pointed at the new version the same way while it
is rolled out.

It follows tidegate's Services: once a promotion flipped `<service>-stable` to the copy that
took the traffic, "stable" is that same copy, and going back to stable moves nothing (one
cutover per blue/green rollout).

A change counts as applied once the Service's EndpointSlices (kept by the EndpointSlice
controller, which kube-proxy and every mesh follow) hold only pods of the copy it selects,
and at least one when that copy has a ready pod.

It carries blue/green only: no split, no header route, no mirror.
"""

from __future__ import annotations

from tidegate.adapters.kube import Kube, Obj
from tidegate.adapters.workloads import REVISION_LABEL, ROLE_LABEL, selecting
from tidegate.plan import Traffic
from tidegate.ports import Role, RoutingError, role_service

_COPY_LABELS = (REVISION_LABEL, ROLE_LABEL)


def _copy_label(service: Obj) -> dict[str, str]:
    selector = service.get("spec", {}).get("selector") or {}
    return {k: selector[k] for k in _COPY_LABELS if selector.get(k)}


def _pod_of(pod: str | None, deployment: str) -> bool:
    """Whether a pod is the Deployment's, by its name: `<deployment>-<template hash>-<id>`."""
    if pod is None or not pod.startswith(f"{deployment}-"):
        return False
    return pod.removeprefix(f"{deployment}-").count("-") == 1


async def existing_service(kube: Kube, namespace: str, name: str) -> Obj:
    """The Service `name`; a RoutingError when it does not exist (a router cannot write it)."""
    found = await kube.read("services", namespace, name)
    if found is None:
        raise RoutingError(f"Service {namespace}/{name} does not exist")
    return found


class ServiceSelectorRouter:
    """The `Router` port on Service selectors."""

    # "service": it routes by the user's Service itself, so that Service already selects
    # only the version the traffic is on (nothing to isolate east-west).
    capabilities = frozenset({"switch", "preview", "service"})

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        service: str,
        preview_service: str | None,
        target: str,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.service = service
        self.preview_service = preview_service
        self.target = target  # the user's Deployment: its copies are named after it

    async def _get(self, name: str) -> Obj:
        return await existing_service(self.kube, self.namespace, name)

    async def _role(self, name: str) -> Role | None:
        """The role whose copy Service `name` selects (stable when both roles have it)."""
        label = _copy_label(await self._get(name))
        if not label:
            return None
        for role in ("stable", "canary"):
            if _copy_label(await self._get(role_service(self.service, role))) == label:
                return role
        return None

    async def observe(self) -> Traffic | None:
        live = await self._role(self.service)
        if live is None:
            return None  # still selecting every version's pods, as the user wrote it
        preview = False
        if self.preview_service is not None:
            shown = await self._role(self.preview_service)
            if shown is None:
                return None
            preview = shown == "canary"
        return Traffic(canary_weight=100 if live == "canary" else 0, preview=preview)

    async def apply(self, traffic: Traffic) -> bool:
        if traffic.canary_weight not in (0, 100) or traffic.header_route or traffic.mirror_percent:
            raise RoutingError(f"a Service selector cannot carry {traffic.describe()}")
        changed = await self._select(self.service, "canary" if traffic.canary_weight else "stable")
        if self.preview_service is not None:
            shown: Role = "canary" if traffic.preview else "stable"
            changed |= await self._select(self.preview_service, shown)
        return changed

    async def applied(self) -> bool:
        for name in (self.service, self.preview_service):
            if name is not None and not await self._endpoints_follow(name):
                return False
        return True

    async def _endpoints_follow(self, name: str) -> bool:
        """Whether Service `name`'s endpoints are those of the copy its selector names: no
        ready pod of another, and one at least when the copy has a ready pod (a selector
        change reaches them through the EndpointSlice controller, a moment later)."""
        service = await self.kube.read("services", self.namespace, name)
        if service is None:
            return True  # gone: it sends nothing anywhere
        label = _copy_label(service)
        if not label:
            return True  # as the user wrote it: nothing of tidegate's to wait for
        copy = f"{self.target}-{next(iter(label.values()))}"
        ready = [e["pod"] for e in await self.kube.endpoints(self.namespace, name) if e["ready"]]
        if not all(_pod_of(pod, copy) for pod in ready):
            return False
        deployment = await self.kube.read("deployments", self.namespace, copy)
        has_ready = bool(((deployment or {}).get("status") or {}).get("readyReplicas"))
        return bool(ready) or not has_ready

    async def release(self, service: str) -> bool:
        changed = False
        for name in (self.service, self.preview_service):
            # A Service already gone (a namespace being deleted) holds nothing of tidegate's.
            if name is not None and await self.kube.read("services", self.namespace, name):
                changed |= await self._select(name, None)
        return changed

    async def _select(self, name: str, role: Role | None) -> bool:
        """Service `name` selects the copy of `role` (None: every copy, as the user wrote it);
        False when it did already."""
        service = await self._get(name)
        wanted = _copy_label(await self._get(role_service(self.service, role))) if role else {}
        if role is not None and not wanted:
            raise RoutingError(f"Service {role_service(self.service, role)} selects no copy yet")
        if _copy_label(service) == wanted:
            return False
        # A merge patch: a key set to None is removed (the selector as the user wrote it).
        patch = {
            "metadata": {"resourceVersion": service["metadata"]["resourceVersion"]},
            "spec": {"selector": selecting(wanted)},
        }
        await self.kube.patch("services", self.namespace, name, patch)
        return True
