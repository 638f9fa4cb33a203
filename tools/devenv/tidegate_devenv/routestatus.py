"""HTTPRoute status as a Gateway controller writes it, for the routes the dev gateway serves.

Once a route's generation is in the gateway's routing snapshot, its `status.parents` says
so: one entry per `spec.parentRefs` item, or, for a route without any, one for the Gateway
`tidegate-dev` the dev gateway stands for (every route is attached to it). Each entry has
the conditions Accepted and ResolvedRefs, with the generation applied as their
observedGeneration: what a controller waits for to know its write is live.

The builders are pure; `StatusWriter` decides which routes need a write and does it through
a blocking patch function it is given, in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("tidegate.gateway.status")

CONTROLLER_NAME = "tidegate.io/dev-gateway"
GATEWAY_GROUP = "gateway.networking.k8s.io"
DEFAULT_PARENT: Mapping[str, str] = {
    "group": GATEWAY_GROUP,
    "kind": "Gateway",
    "name": "tidegate-dev",
}
ACCEPTED_MESSAGE = "served by the tidegate dev gateway"
# A write that hangs is given up after this long and retried later.
WRITE_TIMEOUT = 10.0
RETRY_PERIOD = 2.0

Key = tuple[str, str]
ServiceKey = tuple[str, str]
Obj = Mapping[str, Any]
# (namespace, name, merge patch body): blocking, raises on failure.
Patch = Callable[[str, str, dict[str, Any]], None]


@dataclass(frozen=True)
class Refs:
    """The ResolvedRefs condition's outcome."""

    resolved: bool
    reason: str
    message: str


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(route: Obj) -> Mapping[str, Any]:
    meta: Mapping[str, Any] = route.get("metadata") or {}
    return meta


def route_key(route: Obj) -> Key:
    meta = _meta(route)
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def generation(route: Obj) -> int:
    return int(_meta(route).get("generation") or 0)


def parent_refs(route: Obj) -> list[dict[str, Any]]:
    """The route's parentRefs, or the dev gateway's own Gateway when it names none."""
    refs = (route.get("spec") or {}).get("parentRefs") or []
    return [dict(ref) for ref in refs] or [dict(DEFAULT_PARENT)]


def _backend_refs(route: Obj) -> Iterable[Mapping[str, Any]]:
    """Every backendRef of the route: its rules' and their RequestMirror filters'."""
    for rule in (route.get("spec") or {}).get("rules") or []:
        yield from rule.get("backendRefs") or []
        for item in rule.get("filters") or []:
            if item.get("type") == "RequestMirror":
                ref = (item.get("requestMirror") or {}).get("backendRef")
                if ref:
                    yield ref


def resolve_refs(route: Obj, services: Collection[ServiceKey]) -> Refs:
    """Whether every backendRef names a Service that exists in `services`."""
    namespace = route_key(route)[0]
    wrong_kind: list[str] = []
    missing: list[str] = []
    for ref in _backend_refs(route):
        name = str(ref.get("name") or "")
        if (ref.get("kind") or "Service") != "Service" or ref.get("group"):
            wrong_kind.append(f"{ref.get('group') or 'core'}/{ref.get('kind')} {name}")
        elif (str(ref.get("namespace") or namespace), name) not in services:
            missing.append(f"{ref.get('namespace') or namespace}/{name}")
    if wrong_kind:
        return Refs(
            False, "InvalidKind", "backendRefs of unsupported kinds: " + ", ".join(wrong_kind)
        )
    if missing:
        return Refs(False, "BackendNotFound", "Services not found: " + ", ".join(missing))
    return Refs(True, "ResolvedRefs", "all backendRefs resolved")


def _entry_for(entries: Sequence[Obj], parent: Obj) -> Obj | None:
    return next((e for e in entries if e.get("parentRef") == parent), None)


def _conditions(entry: Obj | None) -> dict[str, Obj]:
    return {str(c.get("type")): c for c in (entry or {}).get("conditions") or []}


def _previous_time(previous: Sequence[Obj], parent: Obj, kind: str, status: str) -> str | None:
    """The lastTransitionTime to keep: the condition's, if it had this status already."""
    condition = _conditions(_entry_for(previous, parent)).get(kind) or {}
    if condition.get("status") == status and condition.get("lastTransitionTime"):
        return str(condition["lastTransitionTime"])
    return None


def _condition(
    kind: str, ok: bool, reason: str, message: str, observed: int, when: str
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": observed,
        "lastTransitionTime": when,
    }


def status_parents(
    route: Obj, refs: Refs, now: datetime, previous: Sequence[Obj] = ()
) -> list[dict[str, Any]]:
    """This gateway's status.parents entries for `route` as applied, one per parentRef.
    `previous` (entries written before) keeps the transition times of unchanged conditions."""
    observed = generation(route)
    stamp = rfc3339(now)
    entries = []
    for parent in parent_refs(route):
        accepted_at = _previous_time(previous, parent, "Accepted", "True") or stamp
        refs_status = "True" if refs.resolved else "False"
        refs_at = _previous_time(previous, parent, "ResolvedRefs", refs_status) or stamp
        conditions = [
            _condition("Accepted", True, "Accepted", ACCEPTED_MESSAGE, observed, accepted_at),
            _condition("ResolvedRefs", refs.resolved, refs.reason, refs.message, observed, refs_at),
        ]
        entries.append(
            {"parentRef": parent, "controllerName": CONTROLLER_NAME, "conditions": conditions}
        )
    return entries


def our_entries(route: Obj) -> list[Obj]:
    """The route's current status.parents entries written by this controller."""
    parents = (route.get("status") or {}).get("parents") or []
    return [p for p in parents if p.get("controllerName") == CONTROLLER_NAME]


def reported(route: Obj, refs: Refs) -> bool:
    """Whether the route's status already says what a write would: its generation and
    ResolvedRefs outcome, for each of its parents (so a restarted gateway writes nothing)."""
    wanted = {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True" if refs.resolved else "False", refs.reason),
    }
    entries = our_entries(route)
    for parent in parent_refs(route):
        conditions = _conditions(_entry_for(entries, parent))
        for kind, (status, reason) in wanted.items():
            found = conditions.get(kind) or {}
            seen = (found.get("status"), found.get("reason"), found.get("observedGeneration"))
            if seen != (status, reason, generation(route)):
                return False
    return True


def status_patch(route: Obj, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A merge patch of status.parents: a merge patch replaces the whole list, so other
    controllers' entries are carried over as the route last showed them."""
    parents = (route.get("status") or {}).get("parents") or []
    others = [dict(p) for p in parents if p.get("controllerName") != CONTROLLER_NAME]
    return {"status": {"parents": [*others, *entries]}}


# What a write reports: the route's identity, generation and ResolvedRefs outcome. A route's
# own status write comes back from the watch with the same one, and is not written again.
Signature = tuple[str, int, bool, str]


def signature(route: Obj, refs: Refs) -> Signature:
    return str(_meta(route).get("uid") or ""), generation(route), refs.resolved, refs.reason


@dataclass(frozen=True)
class Write:
    key: Key
    signature: Signature
    entries: list[dict[str, Any]]
    body: dict[str, Any]


@dataclass(frozen=True)
class Written:
    signature: Signature
    entries: Sequence[Obj]


def _describe(error: BaseException) -> str:
    """One line: an ApiException's str() carries every response header and the body."""
    status = getattr(error, "status", None)
    if status is not None:
        return f"{status} {getattr(error, 'reason', '')}".strip()
    return f"{type(error).__name__}: {error}"


def utc_now() -> datetime:
    return datetime.now(UTC)


class StatusWriter:
    """Writes the status of the applied routes whose generation or ResolvedRefs outcome
    differs from what it last wrote for them, up to `parallel` writes at a time (each
    route's one at a time). A failed write is logged and tried again on the next change, or
    after `RETRY_PERIOD`."""

    def __init__(
        self,
        patch: Patch,
        *,
        timeout: float = WRITE_TIMEOUT,
        clock: Callable[[], datetime] = utc_now,
        parallel: int = 1,
    ) -> None:
        if parallel < 1:
            raise ValueError(f"at least one write at a time, not {parallel}")
        self._patch = patch
        self._timeout = timeout
        self._clock = clock
        self._parallel = parallel
        self._written: dict[Key, Written] = {}

    def due(self, routes: Iterable[Obj], services: Collection[ServiceKey]) -> list[Write]:
        """The writes the applied `routes` need, given the applied `services`."""
        routes = list(routes)
        present = {route_key(r) for r in routes}
        for gone in set(self._written) - present:
            del self._written[gone]
        writes = []
        for route in routes:
            key = route_key(route)
            refs = resolve_refs(route, services)
            mark = signature(route, refs)
            last = self._written.get(key)
            if last is None and reported(route, refs):
                last = self._written[key] = Written(mark, our_entries(route))
            if last is not None and last.signature == mark:
                continue
            same_object = last is not None and last.signature[0] == mark[0]
            previous = last.entries if last is not None and same_object else our_entries(route)
            entries = status_parents(route, refs, self._clock(), previous)
            writes.append(Write(key, mark, entries, status_patch(route, entries)))
        return writes

    async def write_due(self, routes: Iterable[Obj], services: Collection[ServiceKey]) -> int:
        """Do the writes `due` finds (at most one per route), `parallel` at a time, in
        worker threads; how many failed."""
        slots = asyncio.Semaphore(self._parallel)

        async def one(write: Write) -> bool:
            async with slots:
                ok = await self._write(write)
            if ok:
                self._written[write.key] = Written(write.signature, write.entries)
            return ok

        outcomes = await asyncio.gather(*(one(w) for w in self.due(routes, services)))
        return outcomes.count(False)

    async def _write(self, write: Write) -> bool:
        namespace, name = write.key
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.to_thread(self._patch, namespace, name, write.body)
        except Exception as error:  # any API or connection error: retried later
            log.warning(
                "HTTPRoute %s/%s: status not written (%s); retrying",
                namespace,
                name,
                _describe(error),
            )
            return False
        log.info(
            "HTTPRoute %s/%s: status written for generation %d", namespace, name, write.signature[1]
        )
        return True

    async def run(
        self,
        applied: Callable[[], tuple[Iterable[Obj], Collection[ServiceKey]]],
        wake: asyncio.Event,
        period: float = RETRY_PERIOD,
    ) -> None:
        """Write after every change `wake` signals, and every `period` while any failed."""
        while True:
            wake.clear()
            routes, services = applied()
            try:
                failed = await self.write_due(routes, services)
            except Exception:  # a route this cannot read: never the end of the gateway
                log.exception("writing HTTPRoute status failed")
                failed = 1
            timeout = period if failed else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)


def status_patcher(api_client: Any) -> Patch:
    """A blocking merge patch of an HTTPRoute's status subresource, through `api_client`."""
    # Imported here so that the pure parts above don't need the Kubernetes client.
    from kubernetes import client

    from tidegate_devenv.kubewatch import HTTPROUTE_GROUP, HTTPROUTE_PLURAL, HTTPROUTE_VERSION

    custom = client.CustomObjectsApi(api_client)

    def patch(namespace: str, name: str, body: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object_status(
            HTTPROUTE_GROUP,
            HTTPROUTE_VERSION,
            namespace,
            HTTPROUTE_PLURAL,
            name,
            body,
            _content_type="application/merge-patch+json",
            _request_timeout=WRITE_TIMEOUT,
        )

    return patch
