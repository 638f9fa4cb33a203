"""The Kubernetes API through the official client.

Everything is handled as plain dicts in the API's own camelCase form. The client is blocking,
so every call runs in a worker thread, off the event loop. Every failure comes out as one
`KubeError` that names what was asked (verb and resource) and what the API server said.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from urllib3.exceptions import HTTPError

from tidegate import api
from tidegate.ports import AdapterError

FIELD_MANAGER = "tidegate"
# Seconds a single API request may take before it counts as failed.
REQUEST_TIMEOUT = 30
Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
}


class KubeError(AdapterError):
    """A request to the API server failed: `status` is its HTTP status (0 when no answer
    came), `reason` a word for it, and the message says what was asked and what was said."""

    def __init__(self, status: int, verb: str, resource: str, detail: str) -> None:
        self.status = status
        self.verb = verb
        self.resource = resource
        reason = _REASONS.get(status, "ServerError" if status >= 500 else "APIUnreachable")
        super().__init__(reason, f"{verb} {resource}: {detail}")


def _detail(error: ApiException) -> str:
    """The API server's own message, when its answer is a Status object."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"{error.status} {error.reason}".strip()


def make_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """From a kubeconfig file, else $KUBECONFIG / ~/.kube/config, else the in-cluster
    account. A client of its own: the library's global default is left alone."""
    # (The library's loaders carry no type hints.)
    if kubeconfig:
        return cast(client.ApiClient, config.new_client_from_config(config_file=kubeconfig))  # type: ignore[no-untyped-call]
    try:
        return cast(client.ApiClient, config.new_client_from_config())  # type: ignore[no-untyped-call]
    except config.ConfigException:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)


class Kube:
    """The calls tidegate makes, each off the event loop."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.events = client.EventsV1Api(api_client)
        self._dynamic: DynamicClient | None = None

    async def call(
        self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """`fn(*args, **kw)` in a worker thread; its raw answer's JSON, or a KubeError."""
        kw.setdefault("_request_timeout", REQUEST_TIMEOUT)

        def run() -> Any:
            answer = fn(*args, _preload_content=False, **kw)
            data = answer.data
            return json.loads(data) if data else None

        try:
            return await asyncio.to_thread(run)
        except ApiException as error:
            raise KubeError(error.status or 0, verb, resource, _detail(error)) from None
        except (HTTPError, OSError) as error:
            raise KubeError(0, verb, resource, f"no answer: {error}") from None

    async def get_or_none(
        self, resource: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Obj | None:
        try:
            found: Obj = await self.call("get", resource, fn, *args, **kw)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply of `obj` as tidegate's field manager, taking over conflicts."""
        resource = (
            f"{obj['kind'].lower()}s {obj['metadata']['namespace']}/{obj['metadata']['name']}"
        )

        def run() -> Obj:
            if self._dynamic is None:  # discovery, once
                self._dynamic = DynamicClient(self.api_client)  # type: ignore[no-untyped-call]
            kind = self._dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            applied = kind.server_side_apply(
                body=obj,
                namespace=obj["metadata"]["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
            result: Obj = applied.to_dict()
            return result

        try:
            return await asyncio.to_thread(run)
        except ApiException as error:
            raise KubeError(error.status or 0, "apply", resource, _detail(error)) from None
        except (HTTPError, OSError) as error:
            raise KubeError(0, "apply", resource, f"no answer: {error}") from None

    # -- the objects tidegate reads and writes --

    async def deployment(self, namespace: str, name: str) -> Obj | None:
        return await self.get_or_none(
            f"deployments {namespace}/{name}", self.apps.read_namespaced_deployment, name, namespace
        )

    async def patch_deployment(self, namespace: str, name: str, patch: Obj) -> None:
        await self.call(
            "patch",
            f"deployments {namespace}/{name}",
            self.apps.patch_namespaced_deployment,
            name,
            namespace,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def service(self, namespace: str, name: str) -> Obj | None:
        return await self.get_or_none(
            f"services {namespace}/{name}", self.core.read_namespaced_service, name, namespace
        )

    async def patch_service(self, namespace: str, name: str, patch: Obj) -> None:
        await self.call(
            "patch",
            f"services {namespace}/{name}",
            self.core.patch_namespaced_service,
            name,
            namespace,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def http_route(self, namespace: str, name: str) -> Obj | None:
        return await self.get_or_none(
            f"httproutes.gateway.networking.k8s.io {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            "gateway.networking.k8s.io",
            "v1",
            namespace,
            "httproutes",
            name,
        )

    async def patch_http_route(self, namespace: str, name: str, patch: Obj) -> None:
        await self.call(
            "patch",
            f"httproutes.gateway.networking.k8s.io {namespace}/{name}",
            self.custom.patch_namespaced_custom_object,
            "gateway.networking.k8s.io",
            "v1",
            namespace,
            "httproutes",
            name,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def rollout(self, namespace: str, name: str) -> Obj | None:
        return await self.get_or_none(
            f"progressiverollouts.{api.GROUP} {namespace}/{name}",
            self.custom.get_namespaced_custom_object,
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
        )

    async def patch_rollout(self, namespace: str, name: str, patch: Obj, *, status: bool) -> None:
        if status:
            verb, what, fn = (
                "patch",
                "progressiverollouts/status",
                self.custom.patch_namespaced_custom_object_status,
            )
        else:
            verb, what, fn = (
                "patch",
                "progressiverollouts",
                self.custom.patch_namespaced_custom_object,
            )
        await self.call(
            verb,
            f"{what}.{api.GROUP} {namespace}/{name}",
            fn,
            api.GROUP,
            api.VERSION,
            namespace,
            api.PLURAL,
            name,
            patch,
            _content_type=MERGE_PATCH,
        )

    async def create_event(self, namespace: str, event: Obj) -> None:
        await self.call(
            "create",
            f"events.events.k8s.io {namespace}",
            self.events.create_namespaced_event,
            namespace,
            event,
        )
