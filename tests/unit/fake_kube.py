"""A fake of the `tidegate.adapters.kube.Kube` calls the routers make: objects held by
name, read and merge-patched, with resourceVersions and optional 409 conflicts."""

from __future__ import annotations

import copy
from typing import Any

from tidegate.adapters.kube import KubeError

Obj = dict[str, Any]


def merge(target: Obj, patch: Obj) -> None:
    """RFC 7386 in place (lists are replaced whole)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    def __init__(self, *objects: Obj) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.patches: list[tuple[str, Obj]] = []
        self.conflicts = 0  # the next N patches fail with 409, as a concurrent writer causes
        # Each Service's endpoints, as its EndpointSlices hold them: pod name -> ready.
        self.slices: dict[str, dict[str, bool]] = {}

    async def read(
        self, kind: str, namespace: str, name: str, *, fresh: bool = False
    ) -> Obj | None:
        return copy.deepcopy(self.objects.get(name))

    async def endpoints(self, namespace: str, service: str) -> list[Obj]:
        return [{"pod": p, "ready": r} for p, r in self.slices.get(service, {}).items()]

    async def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> None:
        stored = self.objects[name]
        if self.conflicts:
            self.conflicts -= 1
            stored["metadata"]["resourceVersion"] += "x"
            raise KubeError(409, "patch", name, "the object has been modified")
        wanted = patch.get("metadata", {}).get("resourceVersion")
        assert wanted in (None, stored["metadata"]["resourceVersion"]), "a stale write"
        self.patches.append((name, patch))
        merge(stored, {k: v for k, v in patch.items() if k != "metadata"})
        meta = {k: v for k, v in patch.get("metadata", {}).items() if k != "resourceVersion"}
        merge(stored["metadata"], meta)
        stored["metadata"]["resourceVersion"] += "+"
        _default_weights(stored)


def _default_weights(obj: Obj) -> None:
    """As the API server defaults an HTTPRoute's backendRefs: weight 1 where none is set."""
    for rule in obj.get("spec", {}).get("rules") or []:
        for ref in rule.get("backendRefs") or []:
            ref.setdefault("weight", 1)
