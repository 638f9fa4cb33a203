"""A Kubernetes client and the resources tidegate touches, all handled as plain dicts."""

from __future__ import annotations

from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource

from tidegate import api

FIELD_MANAGER = "tidegate"
Obj = dict[str, Any]

Deployment = create_namespaced_resource("apps", "v1", "Deployment", "deployments")
Service = create_namespaced_resource("", "v1", "Service", "services")
HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
ProgressiveRollout = create_namespaced_resource(api.GROUP, api.VERSION, api.KIND, api.PLURAL)


def make_client(kubeconfig: str | None = None) -> AsyncClient:
    """From a kubeconfig file, else $KUBECONFIG / ~/.kube/config / the in-cluster account."""
    if kubeconfig:
        return AsyncClient(KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)
    return AsyncClient(field_manager=FIELD_MANAGER)


async def get_or_none(client: AsyncClient, kind: Any, name: str, namespace: str) -> Obj | None:
    try:
        found = await client.get(kind, name, namespace=namespace)
    except ApiError as error:
        if error.status.code == 404:
            return None
        raise
    result: Obj = found.to_dict()
    return result
