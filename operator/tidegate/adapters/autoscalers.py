"""The HorizontalPodAutoscaler copies: the user's HPA of the target Deployment, run once for
each of tidegate's copies of that Deployment.

`<target>-stable` scales the Deployment `<target>-stable` and `<target>-canary` scales
`<target>-canary`, each with the bounds, metrics and behavior of the user's HPA (as the API
server stored it, defaults filled in, so that a copy written once reads back the same and is
not written again). The copies carry the same marks as the Deployment copies; an HPA of a
copy's name without them is someone else's and is never written or deleted.

The user's own HPA is left as it is: once tidegate has scaled the target Deployment to zero,
the HPA controller leaves it alone (it does not scale a target at zero replicas), and it acts
again when the Deployment is scaled back on a hand-back.
"""

from __future__ import annotations

import copy
from typing import Final

from tidegate.adapters.cache import Kind
from tidegate.adapters.kube import Kube, Obj
from tidegate.adapters.workloads import ROLE_LABEL, ROLLOUT_LABEL, add_owner, owner_reference
from tidegate.ports import AutoscalerError, Role

KIND: Final[Kind] = "horizontalpodautoscalers"
# Copied from the user's HPA as they are; scaleTargetRef is tidegate's.
_COPIED_SPEC_FIELDS = ("minReplicas", "maxReplicas", "metrics", "behavior")
_DROPPED_LABELS = (ROLE_LABEL, ROLLOUT_LABEL)


def autoscaler_copy(source: Obj, rollout: str, role: Role, target: str, workload: str) -> Obj:
    """The HPA `<target>-<role>` that scales the Deployment copy `workload` as `source`
    scales the target."""
    meta, spec = source["metadata"], source.get("spec", {})
    name = f"{target}-{role}"
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in _DROPPED_LABELS}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {**labels, ROLE_LABEL: role, ROLLOUT_LABEL: rollout},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload},
            **{k: copy.deepcopy(spec[k]) for k in _COPIED_SPEC_FIELDS if k in spec},
        },
    }


def holds(existing: Obj, desired: Obj) -> bool:
    """Whether the stored copy already says what `desired` says (labels others added to it
    are no difference)."""
    labels = existing["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return False
    stored = existing.get("spec", {})
    fields = ("scaleTargetRef", *_COPIED_SPEC_FIELDS)
    return all(stored.get(k) == desired["spec"].get(k) for k in fields)


class KubeAutoscalers:
    """The `Autoscalers` port on the Kubernetes API."""

    def __init__(self, kube: Kube, namespace: str, rollout: str, target: str, source: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.rollout = rollout
        self.target_name = target
        self.source_name = source

    def name(self, role: Role) -> str:
        return f"{self.target_name}-{role}"

    async def source(self) -> Obj:
        where = f"HorizontalPodAutoscaler {self.namespace}/{self.source_name}"
        found = await self.kube.read(KIND, self.namespace, self.source_name)
        if found is None:
            raise AutoscalerError(
                f"{where} (spec.autoscalerRef) does not exist", reason="AutoscalerNotFound"
            )
        ref = found.get("spec", {}).get("scaleTargetRef") or {}
        group = str(ref.get("apiVersion", "")).rpartition("/")[0]
        if (group, ref.get("kind"), ref.get("name")) != ("apps", "Deployment", self.target_name):
            raise AutoscalerError(
                f"invalid spec: spec.autoscalerRef: {where} scales {ref.get('kind')} "
                f"{ref.get('name')} ({ref.get('apiVersion')}), not the target Deployment "
                f"{self.target_name}",
                reason="InvalidSpec",
            )
        return found

    async def _copy(self, role: Role) -> Obj | None:
        """That copy as stored; NameConflict when the name is someone else's."""
        found = await self.kube.read(KIND, self.namespace, self.name(role))
        if found is not None and not self._ours(found):
            raise AutoscalerError(
                f"HorizontalPodAutoscaler {self.namespace}/{self.name(role)} exists and was not "
                f"made by tidegate for this rollout (it lacks the label "
                f"{ROLLOUT_LABEL}={self.rollout}); tidegate does not touch it: rename or "
                "delete it",
                reason="NameConflict",
            )
        return found

    def _ours(self, found: Obj) -> bool:
        return (found["metadata"].get("labels") or {}).get(ROLLOUT_LABEL) == self.rollout

    async def ensure(self, role: Role, source: Obj, workload: str) -> None:
        existing = await self._copy(role)
        desired = autoscaler_copy(source, self.rollout, role, self.target_name, workload)
        if existing is not None and holds(existing, desired):
            return
        await self.kube.apply(desired)

    async def remove(self, role: Role) -> None:
        found = await self.kube.read(KIND, self.namespace, self.name(role))
        if found is None or not self._ours(found):
            return
        await self.kube.delete(KIND, self.namespace, self.name(role), found["metadata"]["uid"])

    async def hand_over(self, owner: Obj) -> None:
        reference = owner_reference(owner)
        for role in ("stable", "canary"):
            found = await self.kube.read(KIND, self.namespace, self.name(role))
            if found is not None and self._ours(found):
                await add_owner(self.kube, KIND, self.namespace, found, reference)
