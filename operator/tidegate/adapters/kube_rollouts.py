"""The `Rollouts` and `Events` ports on the Kubernetes API."""

from __future__ import annotations

import logging
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event
from lightkube.types import PatchType

from tidegate import api
from tidegate.adapters.kube import Obj, ProgressiveRollout, get_or_none
from tidegate.ports import EventType

COMPONENT = "tidegate"

log = logging.getLogger("tidegate.events")


class KubeRollouts:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def get(self, namespace: str, name: str) -> Obj | None:
        return await get_or_none(self.client, ProgressiveRollout, name, namespace)

    async def patch_status(self, namespace: str, name: str, patch: Obj) -> None:
        await self.client.patch(
            ProgressiveRollout.Status,
            name,
            {"status": patch},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )

    async def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        await self.client.patch(
            ProgressiveRollout,
            name,
            {"metadata": {"annotations": {key: None}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )


class KubeEvents:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def post(
        self, rollout: Obj, type_: EventType, reason: str, message: str, timestamp: str
    ) -> None:
        meta = rollout["metadata"]
        event: dict[str, Any] = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        try:
            await self.client.create(cast(Event, Event.from_dict(event)))
        except Exception:  # an Event lost is not worth stopping a rollback for
            log.exception("could not post event %s %s", reason, message)
