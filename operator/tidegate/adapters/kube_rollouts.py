"""The `Rollouts` and `Events` ports on the Kubernetes API."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from datetime import datetime

from tidegate import api
from tidegate.adapters.cache import Kind
from tidegate.adapters.kube import Kube, KubeError, Obj
from tidegate.adapters.notifications import secret_reader
from tidegate.ports import EventType

COMPONENT = "tidegate"

log = logging.getLogger("tidegate.events")


def _version(obj: Obj | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


class KubeRollouts:
    """Reads from the cache, except a rollout this process has just written and whose watch
    event has not come back yet: that one is read from the API server, so a reconcile never
    decides from a version older than the last one it wrote. Every write counts (the status,
    an annotation, a finalizer): a request's annotation seen again after its removal would
    be acted on twice."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._written: dict[tuple[str, str], int] = {}  # resourceVersion after our last write

    async def get(self, namespace: str, name: str) -> Obj | None:
        key = (namespace, name)
        found = await self.kube.read("progressiverollouts", namespace, name)
        written = self._written.get(key)
        if written is None or found is None or _version(found) >= written:
            self._written.pop(key, None)
            return found
        return await self.kube.read("progressiverollouts", namespace, name, fresh=True)

    def _wrote(self, namespace: str, name: str, patched: Obj | None) -> str | None:
        if self.kube.cache is not None:
            key = (namespace, name)
            self._written[key] = max(self._written.get(key, 0), _version(patched))
        version = (patched or {}).get("metadata", {}).get("resourceVersion")
        return str(version) if version is not None else None

    async def patch_status(
        self, namespace: str, name: str, patch: Obj, *, resource_version: str | None = None
    ) -> str | None:
        body: Obj = {"status": patch}
        if resource_version is not None:
            # A precondition: the API server refuses the write (409) if the rollout changed.
            body["metadata"] = {"resourceVersion": resource_version}
        patched = await self.kube.patch("progressiverollouts", namespace, name, body, status=True)
        return self._wrote(namespace, name, patched)

    async def set_finalizer(self, rollout: Obj, finalizer: str, present: bool) -> str | None:
        meta = rollout["metadata"]
        current = list(meta.get("finalizers") or [])
        wanted = [f for f in current if f != finalizer] + ([finalizer] if present else [])
        if wanted == current:
            return None
        # The resourceVersion keeps others' finalizers safe from a list written over them.
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": wanted}}
        try:
            patched = await self.kube.patch(
                "progressiverollouts",
                meta["namespace"],
                meta["name"],
                patch,
            )
            return self._wrote(meta["namespace"], meta["name"], patched)
        except KubeError as error:
            if error.status != 409:  # changed meanwhile: the next reconcile sees it and retries
                raise
            return None

    async def list_fresh(self, namespace: str) -> list[Obj]:
        return await self.kube.list_objects("progressiverollouts", namespace)

    async def remove_annotation(self, namespace: str, name: str, key: str) -> str | None:
        patched = await self.kube.patch(
            "progressiverollouts",
            namespace,
            name,
            {"metadata": {"annotations": {key: None}}},
            status=False,
        )
        return self._wrote(namespace, name, patched)


def _instance() -> str:
    """Which operator process posted an Event (the pod's name in a cluster)."""
    return os.environ.get("POD_NAME") or socket.gethostname()


class KubeEvents:
    """Events through events.k8s.io/v1, about the rollout (`regarding`)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.instance = f"{COMPONENT}-{_instance()}"[:128]

    async def post(
        self,
        rollout: Obj,
        type_: EventType,
        reason: str,
        message: str,
        timestamp: str,
        name: str | None = None,
    ) -> None:
        meta = rollout["metadata"]
        naming = {"name": name} if name else {"generateName": f"{meta['name']}-"}
        event: Obj = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {**naming, "namespace": meta["namespace"]},
            "regarding": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "note": message[:1024],
            "action": reason,
            "reportingController": f"{api.GROUP}/{COMPONENT}",
            "reportingInstance": self.instance,
            # events.k8s.io/v1 wants microseconds here.
            "eventTime": _micro(timestamp),
        }
        try:
            await self.kube.create_event(meta["namespace"], event)
        except KubeError as error:  # an Event lost is not worth stopping a rollback for
            if error.status == 409 and name:
                return  # told already (by a process that died before it could say so)
            log.warning("could not post event %s %s", reason, message, exc_info=True)


def _micro(timestamp: str) -> str:
    parsed = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class KubeSecrets:
    """The `Secrets` port: one GET each time (a Secret is never cached: most are not tidegate's
    to watch), decoded."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return await secret_reader(self.kube, namespace, name)()


class KubeTemplates:
    """The `Templates` port: MetricTemplates and ClusterMetricTemplates from the cache (the
    running operator watches both kinds), or from the API server when there is none."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def get(self, kind: api.MetricTemplateKind, namespace: str, name: str) -> Obj | None:
        cluster = kind is api.MetricTemplateKind.CLUSTER
        kind_name: Kind = "clustermetrictemplates" if cluster else "metrictemplates"
        if self.kube.cache is not None:
            return self.kube.cache.get(kind_name, "" if cluster else namespace, name)
        return await self.kube.get_or_none(kind_name, "" if cluster else namespace, name)
