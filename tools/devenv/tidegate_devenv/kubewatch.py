"""Keeps an in-memory copy of HTTPRoutes, Services and Pods by list + watch (an informer)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Pod, Service

log = logging.getLogger(__name__)

HTTPROUTE_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_VERSION = "v1"
RETRY_DELAY = 1.0
# Watches are re-established periodically so a silently dead connection can't stall us.
WATCH_SERVER_TIMEOUT = 60

Obj = dict[str, Any]
Key = tuple[str, str]


def httproute_resource() -> Any:
    # Returns the already registered class when someone created the same resource before.
    return create_namespaced_resource(HTTPROUTE_GROUP, HTTPROUTE_VERSION, "HTTPRoute", "httproutes")


def _to_dict(obj: Any) -> Obj:
    data = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return dict(data)


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Informer:
    """Mirror of one resource type across all namespaces."""

    def __init__(self, client: AsyncClient, resource: Any, on_change: Callable[[], None]) -> None:
        self._client = client
        self._resource = resource
        self._on_change = on_change
        self.items: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self.name = getattr(resource, "__name__", str(resource))

    async def run(self) -> None:
        while True:
            try:
                version = await self._relist()
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any API or connection error: start over from a list
                log.warning("%s informer: %s; relisting in %.0fs", self.name, exc, RETRY_DELAY)
                await asyncio.sleep(RETRY_DELAY)

    async def _relist(self) -> str | None:
        listing = self._client.list(self._resource, namespace="*")
        items: dict[Key, Obj] = {}
        async for obj in listing:
            data = _to_dict(obj)
            items[_key(data)] = data
        self.items = items
        self.synced.set()
        self._on_change()
        try:
            return str(listing.resourceVersion)
        except Exception:  # empty lists may not expose a version
            return None

    async def _watch(self, version: str | None) -> None:
        stream = self._client.watch(
            self._resource,
            namespace="*",
            resource_version=version,
            server_timeout=WATCH_SERVER_TIMEOUT,
        )
        async for event, obj in stream:
            data = _to_dict(obj)
            if event == "DELETED":
                self.items.pop(_key(data), None)
            elif event in ("ADDED", "MODIFIED"):
                self.items[_key(data)] = data
            else:
                continue
            self._on_change()


class ClusterMirror:
    """HTTPRoutes, Services and Pods of all namespaces; ``on_change`` runs after each event."""

    def __init__(self, client: AsyncClient, on_change: Callable[[], None]) -> None:
        self.generation = 0
        self._on_change = on_change
        self.routes = Informer(client, httproute_resource(), self._bump)
        self.services = Informer(client, Service, self._bump)
        self.pods = Informer(client, Pod, self._bump)

    def _bump(self) -> None:
        self.generation += 1
        self._on_change()

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in (self.routes, self.services, self.pods))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in (self.routes, self.services, self.pods):
                group.create_task(informer.run(), name=f"informer-{informer.name}")
