"""The Kubernetes API through the official client.

Everything is handled as plain dicts in the API's own camelCase form. The client is blocking,
so every call runs in a worker thread, off the event loop. Every failure comes out as one
`KubeError` that names what was asked (verb and resource) and what the API server said.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from urllib3.exceptions import HTTPError

from tidegate import __version__, api, metrics
from tidegate.adapters import threads
from tidegate.adapters.cache import SERVICE_NAME_LABEL, Cache, Kind, trim
from tidegate.ports import AdapterError

FIELD_MANAGER = "tidegate"
# Seconds a single API request may take before it counts as failed, without leader election.
# With it, less: see `ElectionSettings.request_limit`.
REQUEST_TIMEOUT = 30
Obj = dict[str, Any]
_T = TypeVar("_T")

MERGE_PATCH = "application/merge-patch+json"
# How each kind is named in messages (as kubectl names it), and the custom ones' API.
_RESOURCE: dict[Kind, str] = {
    "deployments": "deployments",
    "services": "services",
    "httproutes": "httproutes.gateway.networking.k8s.io",
    "progressiverollouts": f"progressiverollouts.{api.GROUP}",
    "horizontalpodautoscalers": "horizontalpodautoscalers.autoscaling",
    "endpointslices": "endpointslices.discovery.k8s.io",
}
_CUSTOM: dict[Kind, tuple[str, str]] = {
    "httproutes": ("gateway.networking.k8s.io", "v1"),
    "progressiverollouts": (api.GROUP, api.VERSION),
}
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


def user_agent(identity: str) -> str:
    """tidegate's user agent, naming the replica: the API server's audit log says who wrote."""
    return f"tidegate/{__version__} ({identity})"


def make_api_client(
    kubeconfig: str | None = None, *, user_agent: str | None = None
) -> client.ApiClient:
    """From a kubeconfig file, else $KUBECONFIG / ~/.kube/config, else the in-cluster
    account. A client of its own: the library's global default is left alone.

    Its requests say `tidegate/<version>` (not the generator's `OpenAPI-Generator/...`), so
    that an API server's audit log tells tidegate's reads and writes from others made with
    the same credentials; kopf's own requests carry `tidegate/<version> kopf/<version>`."""
    from tidegate import __version__

    # (The library's loaders carry no type hints.)
    # One pooled connection for each worker thread (the library's default is five per CPU).
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = threads.KUBE_THREADS
    api_client: client.ApiClient
    if kubeconfig:
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    else:
        try:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except config.ConfigException:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api_client = client.ApiClient(configuration)
    api_client.user_agent = user_agent or f"tidegate/{__version__}"
    return api_client


async def _off_the_loop(verb: str, resource: str, run: Callable[[], _T]) -> _T:
    """`run()` in a worker thread; whatever the client raises comes out as a KubeError.
    `resource` may name the object ("deployments ns/name") for messages; the metrics count
    by kind only."""
    kind = resource.split(" ", 1)[0]
    try:
        result = await threads.run_in("kube", run)
    except ApiException as error:
        metrics.KUBE_REQUESTS.labels(verb, kind, str(error.status or 0)).inc()
        raise KubeError(error.status or 0, verb, resource, _detail(error)) from None
    except (HTTPError, OSError) as error:
        metrics.KUBE_REQUESTS.labels(verb, kind, "0").inc()
        raise KubeError(0, verb, resource, f"no answer: {error}") from None
    metrics.KUBE_REQUESTS.labels(verb, kind, "2xx").inc()
    return result


class Kube:
    """The calls tidegate makes, each off the event loop."""

    def __init__(
        self,
        api_client: client.ApiClient,
        cache: Cache | None = None,
        *,
        may_write: Callable[[], bool] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.api_client = api_client
        self.request_timeout = request_timeout
        # Reads come from here when it is set (the running operator); `fresh=True` asks the
        # API server instead, for a write that needs the latest resourceVersion.
        self.cache = cache
        # Asked in the worker thread just before each write is sent: with leader election,
        # whether this replica still holds the Lease (a process that was paused past its
        # renew deadline must not send what it had queued).
        self.may_write = may_write
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self._dynamic_client: DynamicClient | None = None

    async def call(
        self, verb: str, resource: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """`fn(*args, **kw)` in a worker thread; its raw answer's JSON, or a KubeError."""
        kw.setdefault("_request_timeout", self.request_timeout)

        def run() -> Any:
            self._check_may_write(verb, resource)
            answer = fn(*args, _preload_content=False, **kw)
            data = answer.data
            return json.loads(data) if data else None

        return await _off_the_loop(verb, resource, run)

    def _check_may_write(self, verb: str, resource: str) -> None:
        if verb not in ("get", "list") and self.may_write is not None and not self.may_write():
            raise KubeError(0, verb, resource, "not sent: this replica does not lead")

    async def get_or_none(
        self, resource: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> Obj | None:
        """A GET of one object; None when it does not exist."""
        try:
            found: Obj = await self.call("get", resource, fn, *args, **kw)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def _dynamic(
        self, verb: str, resource: str, operation: Callable[[DynamicClient], Any]
    ) -> Obj:
        """`operation` on the dynamic client, in a worker thread. The dynamic client sends
        dicts as they are (the typed one turns some strings into datetimes on the way)."""

        def run() -> Obj:
            if self._dynamic_client is None:  # discovery, once
                self._dynamic_client = DynamicClient(self.api_client)  # type: ignore[no-untyped-call]
            self._check_may_write(verb, resource)
            answer: Obj = operation(self._dynamic_client).to_dict()
            return answer

        return await _off_the_loop(verb, resource, run)

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply of `obj` as tidegate's field manager, taking over conflicts."""
        meta = obj["metadata"]
        resource = f"{obj['kind'].lower()}s {meta['namespace']}/{meta['name']}"
        return await self._dynamic(
            "apply",
            resource,
            lambda dynamic: dynamic.resources.get(
                api_version=obj["apiVersion"], kind=obj["kind"]
            ).server_side_apply(
                body=obj,
                namespace=meta["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=self.request_timeout,
            ),
        )

    # -- the objects tidegate reads and writes --

    # -- the objects tidegate reads and writes --

    def _calls(self, kind: Kind) -> tuple[Callable[..., Any], Callable[..., Any], tuple[str, ...]]:
        """The client's read and patch functions for a kind, and their leading arguments
        (custom objects take group, version, namespace and plural before the name)."""
        if kind == "deployments":
            return self.apps.read_namespaced_deployment, self.apps.patch_namespaced_deployment, ()
        if kind == "services":
            return self.core.read_namespaced_service, self.core.patch_namespaced_service, ()
        if kind == "horizontalpodautoscalers":
            return (
                self.autoscaling.read_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                (),
            )
        group, version = _CUSTOM[kind]
        return (
            self.custom.get_namespaced_custom_object,
            self.custom.patch_namespaced_custom_object,
            (group, version),
        )

    def _arguments(self, kind: Kind, namespace: str, name: str) -> tuple[str, ...]:
        _, _, leading = self._calls(kind)
        return (*leading, namespace, kind, name) if leading else (name, namespace)

    async def read(
        self, kind: Kind, namespace: str, name: str, *, fresh: bool = False
    ) -> Obj | None:
        """The object as the watches last saw it (when there is a cache), or as the API server
        has it now (`fresh`, or no cache); None when it does not exist."""
        if self.cache is not None and not fresh:
            return self.cache.get(kind, namespace, name)
        read, _, _ = self._calls(kind)
        return await self.get_or_none(
            f"{_RESOURCE[kind]} {namespace}/{name}", read, *self._arguments(kind, namespace, name)
        )

    async def endpoints(self, namespace: str, service: str) -> list[Obj]:
        """The endpoints of Service `service`, from all its EndpointSlices: each as
        {"pod": name, "ready": bool} (trimmed as the cache keeps them)."""
        if self.cache is not None:
            slices = self.cache.get_all("endpointslices", namespace, service)
        else:
            found = await self.call(
                "list",
                _RESOURCE["endpointslices"],
                self.discovery.list_namespaced_endpoint_slice,
                namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={service}",
            )
            slices = [trim("endpointslices", s) for s in found.get("items") or []]
        return [e for s in slices for e in s.get("endpoints") or []]

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: Obj, *, status: bool = False
    ) -> Obj:
        """A JSON merge patch of the object (or of its status subresource); the object after."""
        _, write, _ = self._calls(kind)
        if status:  # only rollouts' status is written
            write = self.custom.patch_namespaced_custom_object_status
        what = f"{_RESOURCE[kind]}{'/status' if status else ''} {namespace}/{name}"
        patched: Obj = await self.call(
            "patch", what, write, *self._arguments(kind, namespace, name), patch,
            _content_type=MERGE_PATCH,
        )  # fmt: skip
        return patched

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        """Delete the object with that uid (a precondition: never another object that took
        its name meanwhile); one already gone is no error. Only tidegate's copies are ever
        deleted: HPAs and Deployments."""
        if kind == "horizontalpodautoscalers":
            delete = self.autoscaling.delete_namespaced_horizontal_pod_autoscaler
        elif kind == "deployments":
            delete = self.apps.delete_namespaced_deployment
        else:
            raise ValueError(f"tidegate does not delete {kind}")
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
        try:
            await self.call(
                "delete", f"{_RESOURCE[kind]} {namespace}/{name}", delete, name, namespace,
                body=options,
            )  # fmt: skip
        except KubeError as error:
            if error.status != 404:
                raise

    async def create_event(self, namespace: str, event: Obj) -> None:
        """An events.k8s.io/v1 Event (its eventTime must keep its microseconds)."""
        await self._dynamic(
            "create",
            f"events.events.k8s.io {namespace}",
            lambda dynamic: dynamic.resources.get(
                api_version="events.k8s.io/v1", kind="Event"
            ).create(body=event, namespace=namespace, _request_timeout=self.request_timeout),
        )
