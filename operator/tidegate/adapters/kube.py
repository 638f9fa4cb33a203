"""The Kubernetes API through the official client.

Everything is handled as plain dicts in the API's own camelCase form. The client is blocking,
so every call runs in a worker thread, off the event loop. Every failure comes out as one
`KubeError` that names what was asked (verb and resource) and what the API server said.

Requests go through the client's `ApiClient` (its configuration, credentials, TLS and
connection pool) by path, not through the generated per-group classes (`CoreV1Api`,
`AppsV1Api`, ...): each of those imports the model classes of every type its methods name,
hundreds of modules and about 30 MiB of the operator's memory, for answers tidegate reads as
JSON anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
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
_RESOURCE: dict[str, str] = {
    "deployments": "deployments",
    "services": "services",
    "httproutes": "httproutes.gateway.networking.k8s.io",
    "progressiverollouts": f"progressiverollouts.{api.GROUP}",
    "horizontalpodautoscalers": "horizontalpodautoscalers.autoscaling",
    "endpointslices": "endpointslices.discovery.k8s.io",
}
# Where each kind lives: its API group's path and its plural. Kinds beyond the cache's are
# read (ConfigMaps, Secrets) or written (Events) without being watched.
_PATHS: dict[str, tuple[str, str]] = {
    "deployments": ("/apis/apps/v1", "deployments"),
    "services": ("/api/v1", "services"),
    "configmaps": ("/api/v1", "configmaps"),
    "secrets": ("/api/v1", "secrets"),
    "horizontalpodautoscalers": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "httproutes": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "progressiverollouts": (f"/apis/{api.GROUP}/{api.VERSION}", api.PLURAL),
    "metrictemplates": (f"/apis/{api.GROUP}/{api.VERSION}", "metrictemplates"),
    "clustermetrictemplates": (f"/apis/{api.GROUP}/{api.VERSION}", "clustermetrictemplates"),
    "events": ("/apis/events.k8s.io/v1", "events"),
}
# The kinds tidegate creates by server-side apply, by (apiVersion, kind).
_APPLIED: dict[tuple[str, str], str] = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "ConfigMap"): "configmaps",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
}
_CLUSTER_SCOPED = frozenset({"clustermetrictemplates"})
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON


def path_of(kind: str, namespace: str = "", name: str = "", *, subresource: str = "") -> str:
    """The API path of a kind's collection in a namespace, or of one object (and one of its
    subresources). Names are percent-encoded whole: never a path of someone's choosing."""
    prefix, plural = _PATHS[kind]
    path = prefix
    if kind not in _CLUSTER_SCOPED:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def send(
    api_client: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str | None = None,
    timeout: float,
) -> Any:
    """One request through the client (blocking); the answer's JSON, or ApiException for a
    status outside 2xx, as the generated classes raise it."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or "application/json"
    serialized = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*serialized, _request_timeout=timeout)
    response.read()  # type: ignore[no-untyped-call]  # (the client has no type hints here)
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    data = response.data
    return json.loads(data) if data else None


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

    async def request(
        self,
        verb: str,
        resource: str,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """One request in a worker thread; its answer's JSON, or a KubeError. `verb` and
        `resource` name it in messages and metrics."""

        def run() -> Any:
            self._check_may_write(verb, resource)
            return send(
                self.api_client, method, path, query=query, body=body,
                content_type=content_type, timeout=self.request_timeout,
            )  # fmt: skip

        return await _off_the_loop(verb, resource, run)

    def _check_may_write(self, verb: str, resource: str) -> None:
        if verb not in ("get", "list") and self.may_write is not None and not self.may_write():
            raise KubeError(0, verb, resource, "not sent: this replica does not lead")

    async def get_or_none(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A GET of one object from the API server; None when it does not exist."""
        where = f"{namespace}/{name}" if kind not in _CLUSTER_SCOPED else name
        try:
            found: Obj = await self.request(
                "get", f"{_named(kind)} {where}", "GET", path_of(kind, namespace, name)
            )
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def list_objects(
        self, kind: str, namespace: str, *, label_selector: str = ""
    ) -> list[Obj]:
        """The objects of a kind in a namespace, from the API server."""
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self.request(
            "list", f"{_named(kind)} {namespace}", "GET", path_of(kind, namespace), query=query
        )
        return list((found or {}).get("items") or [])

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply of `obj` as tidegate's field manager, taking over conflicts."""
        meta = obj["metadata"]
        kind = _APPLIED[(obj["apiVersion"], obj["kind"])]
        applied: Obj = await self.request(
            "apply",
            f"{_named(kind)} {meta['namespace']}/{meta['name']}",
            "PATCH",
            path_of(kind, meta["namespace"], meta["name"]),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=obj,
            content_type=APPLY_PATCH,
        )
        return applied

    # -- the objects tidegate reads and writes --

    async def read(
        self, kind: Kind, namespace: str, name: str, *, fresh: bool = False
    ) -> Obj | None:
        """The object as the watches last saw it (when there is a cache), or as the API server
        has it now (`fresh`, or no cache); None when it does not exist."""
        if self.cache is not None and not fresh:
            return self.cache.get(kind, namespace, name)
        return await self.get_or_none(kind, namespace, name)

    async def endpoints(self, namespace: str, service: str) -> list[Obj]:
        """The endpoints of Service `service`, from all its EndpointSlices: each as
        {"pod": name, "ready": bool} (trimmed as the cache keeps them)."""
        if self.cache is not None:
            slices = self.cache.get_all("endpointslices", namespace, service)
        else:
            found = await self.list_objects(
                "endpointslices", namespace, label_selector=f"{SERVICE_NAME_LABEL}={service}"
            )
            slices = [trim("endpointslices", s) for s in found]
        return [e for s in slices for e in s.get("endpoints") or []]

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: Obj, *, status: bool = False
    ) -> Obj:
        """A JSON merge patch of the object (or of its status subresource); the object after."""
        what = f"{_named(kind)}{'/status' if status else ''} {namespace}/{name}"
        path = path_of(kind, namespace, name, subresource="status" if status else "")
        patched: Obj = await self.request(
            "patch", what, "PATCH", path, body=patch, content_type=MERGE_PATCH
        )
        return patched

    async def delete(self, kind: Kind, namespace: str, name: str, uid: str) -> None:
        """Delete the object with that uid (a precondition: never another object that took
        its name meanwhile); one already gone is no error. Only tidegate's copies are ever
        deleted: HPAs and Deployments."""
        if kind not in ("horizontalpodautoscalers", "deployments"):
            raise ValueError(f"tidegate does not delete {kind}")
        options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self.request(
                "delete", f"{_named(kind)} {namespace}/{name}", "DELETE",
                path_of(kind, namespace, name), body=options,
            )  # fmt: skip
        except KubeError as error:
            if error.status != 404:
                raise

    async def create_event(self, namespace: str, event: Obj) -> None:
        """An events.k8s.io/v1 Event (its eventTime must keep its microseconds: it is sent as
        the string it is)."""
        await self.request(
            "create", f"events.events.k8s.io {namespace}", "POST", path_of("events", namespace),
            body=event,
        )  # fmt: skip


def _named(kind: str) -> str:
    """A kind as kubectl names it in messages (and the metrics' resource label)."""
    return _RESOURCE.get(kind, kind)
