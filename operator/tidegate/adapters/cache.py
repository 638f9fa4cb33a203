"""What reconciles read: the objects tidegate looks at, as its watches last saw them.

kopf's indices (registered in `tidegate.handlers`) hold a trimmed copy of every Deployment,
Service, HTTPRoute, HorizontalPodAutoscaler, ProgressiveRollout and MetricTemplate in the
watched namespaces, the endpoints of every EndpointSlice (keyed by its Service), and every
ClusterMetricTemplate (keyed by an empty namespace): only the fields tidegate reads, so that
thousands of objects stay small. kopf fills them from its watches and starts no handler
before every one has its first full list, so a reconcile never reads an empty cache. An idle
rollout costs no API request.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Obj = dict[str, Any]
# The label that names an EndpointSlice's Service (set by the EndpointSlice controller).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
Key = tuple[str, str]  # (namespace, name)
Kind = Literal[
    "deployments",
    "services",
    "httproutes",
    "progressiverollouts",
    "horizontalpodautoscalers",
    "metrictemplates",
    "clustermetrictemplates",
    "endpointslices",
]

_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "labels",
    "annotations",
    "deletionTimestamp",
    "finalizers",
    "creationTimestamp",
)
_DEPLOYMENT_SPEC = (
    "replicas",
    "selector",
    "template",
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
)
_DEPLOYMENT_STATUS = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
)
# What an HPA copy is made of (its status is the HPA controller's business).
_AUTOSCALER_SPEC = ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics", "behavior")
# kubectl's copy of the whole object would double what is kept, for nothing.
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _pick(source: Mapping[str, Any] | None, fields: Iterable[str]) -> Obj:
    source = source or {}
    return {f: copy.deepcopy(source[f]) for f in fields if f in source}


def _metadata(body: Mapping[str, Any]) -> Obj:
    meta = _pick(body.get("metadata"), _METADATA)
    annotations = meta.get("annotations")
    if annotations:
        meta["annotations"] = {
            k: v for k, v in annotations.items() if k not in _DROPPED_ANNOTATIONS
        }
    return meta


def _route_parents(status: Mapping[str, Any] | None) -> list[Obj]:
    """Of an HTTPRoute's status, what says whether its Gateways applied it: each parent's
    conditions, type, status and observedGeneration only."""
    parents = (status or {}).get("parents") or []
    return [
        {
            "conditions": [
                _pick(c, ("type", "status", "observedGeneration"))
                for c in parent.get("conditions") or []
            ]
        }
        for parent in parents
    ]


def trim(kind: Kind, body: Mapping[str, Any]) -> Obj:
    """The part of an object tidegate reads."""
    trimmed: Obj = {"metadata": _metadata(body)}
    if kind == "deployments":
        trimmed["spec"] = _pick(body.get("spec"), _DEPLOYMENT_SPEC)
        trimmed["status"] = _pick(body.get("status"), _DEPLOYMENT_STATUS)
    elif kind == "services":
        trimmed["spec"] = _pick(body.get("spec"), ("selector", "ports"))
    elif kind == "httproutes":
        trimmed["spec"] = _pick(body.get("spec"), ("rules",))
        trimmed["status"] = {"parents": _route_parents(body.get("status"))}
    elif kind == "horizontalpodautoscalers":
        trimmed["spec"] = _pick(body.get("spec"), _AUTOSCALER_SPEC)
    elif kind == "endpointslices":
        # Which pods the Service sends to, and whether each is ready: nothing else.
        trimmed["endpoints"] = [
            {
                "pod": (e.get("targetRef") or {}).get("name"),
                "ready": (e.get("conditions") or {}).get("ready") is not False,
            }
            for e in body.get("endpoints") or []
        ]
        trimmed["metadata"] = _pick(body.get("metadata"), ("name", "namespace"))
    elif kind in ("metrictemplates", "clustermetrictemplates"):
        trimmed["spec"] = copy.deepcopy(body.get("spec") or {})
    else:
        trimmed["spec"] = copy.deepcopy(body.get("spec") or {})
        trimmed["status"] = copy.deepcopy(body.get("status") or {})
    return trimmed


class Cache:
    """Reads from the indices; each read is a copy the caller may change."""

    def __init__(self, indices: Mapping[Kind, Mapping[Key, Iterable[Obj]]]) -> None:
        self.indices = indices

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        store = self.indices[kind].get((namespace, name))
        for obj in store or ():
            return copy.deepcopy(obj)
        return None

    def get_all(self, kind: Kind, namespace: str, name: str) -> list[Obj]:
        """Every object under one key (the EndpointSlices of one Service)."""
        return [copy.deepcopy(obj) for obj in self.indices[kind].get((namespace, name)) or ()]
