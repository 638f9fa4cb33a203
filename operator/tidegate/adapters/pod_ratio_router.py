"""Traffic routing with no gateway and no mesh: the share of requests each version gets is
its share of the ready pods behind the Service `spec.service.name`.

At weight 0 that Service selects the stable copy alone (the copy label tidegate's own
`<service>-stable` selects). At any other weight its selector is the one the user wrote,
which selects the pods of both copies, and the weight is noted in the annotation
`tidegate.io/canary-weight` (it is what `observe` reports). The engine sizes the copies so
that their pods carry the weight.

A change counts as applied once the Service's EndpointSlices hold exactly the ready pods
planned: at weight 0 only pods of the stable copy (one at least when it has a ready pod);
otherwise, for each of the stable and canary copies, as many ready pods as the copy's
`spec.replicas`, and no ready pod of any other copy. Pods of the user's own Deployment do
not count: it runs none after adoption, and a resize is scaled back to zero.

It carries weights only: no header route, no mirror, no preview.
"""

from __future__ import annotations

from collections import Counter

from tidegate.adapters.kube import Kube, Obj
from tidegate.adapters.service_router import _copy_label, _pod_of, existing_service
from tidegate.adapters.workloads import selecting
from tidegate.plan import Traffic
from tidegate.ports import Role, RoutingError, role_service

WEIGHT_ANNOTATION = "tidegate.io/canary-weight"


def _weight_of(service: Obj) -> int | None:
    value = ((service.get("metadata") or {}).get("annotations") or {}).get(WEIGHT_ANNOTATION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class PodRatioRouter:
    """The `Router` port on the pods behind the user's Service."""

    # "service": it routes by the user's Service itself, so there is nothing to isolate
    # east-west (callers inside the cluster get the same share).
    capabilities = frozenset({"weights", "service"})

    def __init__(self, kube: Kube, namespace: str, service: str, target: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.service = service
        self.target = target  # the user's Deployment: its copies are named after it

    async def _get(self, name: str) -> Obj:
        return await existing_service(self.kube, self.namespace, name)

    async def _role_label(self, role: Role) -> dict[str, str]:
        return _copy_label(await self._get(role_service(self.service, role)))

    async def observe(self) -> Traffic | None:
        service = await self._get(self.service)
        label = _copy_label(service)
        if label:
            stable = await self._role_label("stable")
            return Traffic() if label == stable else None
        weight = _weight_of(service)
        if weight is None or not 0 < weight <= 100:
            return None  # as the user wrote it
        return Traffic(canary_weight=weight)

    async def apply(self, traffic: Traffic) -> bool:
        if traffic.header_route or traffic.mirror_percent or traffic.preview:
            raise RoutingError(f"the pods behind a Service cannot carry {traffic.describe()}")
        weight = traffic.canary_weight
        if weight == 0:
            wanted = await self._role_label("stable")
            if not wanted:
                stable = role_service(self.service, "stable")
                raise RoutingError(f"Service {stable} selects no copy yet")
            return await self._write(wanted, None)
        return await self._write({}, weight)

    async def _write(self, label: dict[str, str], weight: int | None) -> bool:
        """The Service selects the copy `label` names (empty: as the user wrote it) and
        notes `weight`; False when it did already."""
        service = await self._get(self.service)
        if _copy_label(service) == label and _weight_of(service) == weight:
            return False
        # A merge patch: a key set to None is removed.
        patch = {
            "metadata": {
                "resourceVersion": service["metadata"]["resourceVersion"],
                "annotations": {WEIGHT_ANNOTATION: None if weight is None else str(weight)},
            },
            "spec": {"selector": selecting(label)},
        }
        await self.kube.patch("services", self.namespace, self.service, patch)
        return True

    async def applied(self) -> bool:
        service = await self.kube.read("services", self.namespace, self.service)
        if service is None:
            return True  # gone: it sends nothing anywhere
        label = _copy_label(service)
        weight = _weight_of(service)
        if not label and weight is None:
            return True  # as the user wrote it: nothing of tidegate's to wait for
        ready = [
            e["pod"]
            for e in await self.kube.endpoints(self.namespace, self.service)
            if e["ready"] and not _pod_of(e["pod"], self.target)
        ]
        if label:
            copy = f"{self.target}-{next(iter(label.values()))}"
            if not all(_pod_of(pod, copy) for pod in ready):
                return False
            return bool(ready) or not await self._ready_replicas(copy)
        copies = []
        roles: tuple[Role, ...] = ("stable", "canary")
        for role in roles:
            role_label = await self._role_label(role)
            if role_label:
                copies.append(f"{self.target}-{next(iter(role_label.values()))}")
        counted: Counter[str] = Counter()
        for pod in ready:
            owner = next((c for c in copies if _pod_of(pod, c)), None)
            if owner is None:
                return False  # a pod of a copy that has no role
            counted[owner] += 1
        for copy in dict.fromkeys(copies):
            if counted[copy] != await self._planned(copy):
                return False
        return True

    async def _ready_replicas(self, copy: str) -> int:
        deployment = await self.kube.read("deployments", self.namespace, copy)
        return int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)

    async def _planned(self, copy: str) -> int:
        deployment = await self.kube.read("deployments", self.namespace, copy)
        return int(((deployment or {}).get("spec") or {}).get("replicas") or 0)

    async def release(self, service: str) -> bool:
        # A Service already gone (a namespace being deleted) holds nothing of tidegate's.
        if not await self.kube.read("services", self.namespace, self.service):
            return False
        return await self._write({}, None)
