"""Keeps an in-memory copy of HTTPRoutes, Services and Pods by list + watch (an informer).

The official Kubernetes client is blocking, so each resource is listed and watched in a
worker thread of its own. The thread hands what it sees to the event loop, and the copy is
only ever changed there, in the order the API server sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import threading
from collections.abc import Callable, Collection
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tidegate_devenv.delayed import PODS, ROUTES, SERVICES

log = logging.getLogger(__name__)

HTTPROUTE_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_VERSION = "v1"
HTTPROUTE_PLURAL = "httproutes"
RETRY_DELAY = 1.0
# Watches are re-established periodically so a silently dead connection can't stall us;
# should cutting off an open watch ever fail, this is also the latest a stop is noticed.
WATCH_SERVER_TIMEOUT = 60
# (connect, read) seconds per request. A watch may be quiet for WATCH_SERVER_TIMEOUT.
REQUEST_TIMEOUT = (10.0, WATCH_SERVER_TIMEOUT + 20.0)
# How long stopping waits for a worker thread to end before leaving it behind: it is a
# daemon thread, and only a list call in flight keeps it (up to REQUEST_TIMEOUT).
STOP_TIMEOUT = 5.0
WATCH_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})  # not BOOKMARK
ALL_KINDS = (ROUTES, SERVICES, PODS)

Obj = dict[str, Any]
Key = tuple[str, str]
# Told of each object's new state (None: deleted) before on_change runs.
OnObject = Callable[[Key, Obj | None], None]


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _describe(error: Exception) -> str:
    """One line for the log: an ApiException's own str() carries every header and the body."""
    if not isinstance(error, ApiException):
        return f"{type(error).__name__}: {error}"
    try:
        message = json.loads(error.body or "").get("message")
    except (AttributeError, TypeError, ValueError):
        message = None
    return f"{error.status} {error.reason}" + (f": {message}" if message else "")


def _same(old: Obj, new: Obj) -> bool:
    """Whether a relisted object is the one already held: same resourceVersion."""
    version = (new.get("metadata") or {}).get("resourceVersion")
    if version:
        return bool(version == (old.get("metadata") or {}).get("resourceVersion"))
    return old == new


def relist_changes(old: dict[Key, Obj], new: dict[Key, Obj]) -> list[tuple[Key, Obj | None]]:
    """What a relist changed, object by object: the added and modified ones with their new
    state, the deleted ones with None."""
    changes: list[tuple[Key, Obj | None]] = [
        (key, obj) for key, obj in new.items() if key not in old or not _same(old[key], obj)
    ]
    changes.extend((key, None) for key in old if key not in new)
    return changes


class _Stopped(Exception):
    """The informer was asked to stop, or its event loop has gone."""


def _cut(response: Any) -> None:
    """Shut the connection of an open watch, so that a read blocked on it returns now.

    The same as Watch.stop() does with the response it holds; done here too because
    Watch.stream only holds the response a moment after the request returned it."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Informer:
    """Mirror of one resource type across all namespaces.

    `lister` is the client's list function for it, called with `args` first; called with
    watch=True, the same function watches.
    """

    def __init__(
        self,
        name: str,
        lister: Callable[..., Any],
        on_change: Callable[[], None],
        args: tuple[str, ...] = (),
        on_object: OnObject | None = None,
    ) -> None:
        self.name = name
        self._lister = lister
        self._args = args
        self._on_change = on_change
        self._on_object = on_object
        self.items: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self._stopping = threading.Event()
        # Guards the open watch against stop(): either stop() sees the watch's response and
        # cuts it off, or the worker sees the stop as soon as the response comes.
        self._lock = threading.Lock()
        self._watch: watch.Watch | None = None
        self._response: Any = None

    async def run(self) -> None:
        """List, then watch, until cancelled; the worker thread is stopped on the way out."""
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()
        self._stopping.clear()
        worker = threading.Thread(
            target=self._work, args=(loop, ended), name=f"informer-{self.name}", daemon=True
        )
        worker.start()
        try:
            await ended.wait()
            raise RuntimeError(f"the {self.name} informer's thread ended")
        finally:
            self.stop()
            try:
                await asyncio.wait_for(ended.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("%s informer: the worker thread did not end in time", self.name)

    def stop(self) -> None:
        """Ask the worker thread to end; an open watch is cut off at once. Thread-safe."""
        with self._lock:
            self._stopping.set()
            if self._watch is not None:
                self._watch.stop()  # type: ignore[no-untyped-call]
            if self._response is not None:
                _cut(self._response)

    # -- on the event loop --

    def _replace(self, items: dict[Key, Obj]) -> None:
        if self._stopping.is_set():
            return
        if self._on_object is not None:
            for key, obj in relist_changes(self.items, items):
                self._on_object(key, obj)
        self.items = items
        self.synced.set()
        self._on_change()

    def _apply(self, kind: str, obj: Obj) -> None:
        if self._stopping.is_set():
            return
        key = _key(obj)
        if kind == "DELETED":
            self.items.pop(key, None)
        else:
            self.items[key] = obj
        if self._on_object is not None:
            self._on_object(key, None if kind == "DELETED" else obj)
        self._on_change()

    # -- in the worker thread --

    def _post(
        self, loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any
    ) -> None:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError as error:  # the loop is closed: nobody is left to tell
            raise _Stopped from error

    def _work(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Event) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    version = self._relist(loop)
                    while not self._stopping.is_set():
                        version = self._watch_from(loop, version)
                except _Stopped:
                    return
                except Exception as error:  # any API or connection error: start over from a list
                    if self._stopping.is_set():
                        return  # cut off by stop(), not a failure
                    log.warning(
                        "%s informer: %s; relisting in %.0fs",
                        self.name,
                        _describe(error),
                        RETRY_DELAY,
                    )
                    self._stopping.wait(RETRY_DELAY)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(ended.set)

    def _relist(self, loop: asyncio.AbstractEventLoop) -> str | None:
        """The whole list, handed to the loop; the resourceVersion to watch from."""
        # The raw answer: the API's own camelCase dicts, without building models first.
        response = self._lister(
            *self._args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        )
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = {_key(obj): obj for obj in body.get("items") or []}
        self._post(loop, self._replace, items)
        version = (body.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else None

    def _watch_from(self, loop: asyncio.AbstractEventLoop, version: str | None) -> str | None:
        """One watch from `version` until the server ends it; the last version seen.

        A watch that fails (410 Gone when `version` is too old) raises, and the caller lists
        again: with timeout_seconds set, Watch.stream does not retry by itself.
        """
        # return_type "object": events stay the API's dicts. Only raw_object is read, and
        # building V1Pod models from every event would cost CPU for nothing.
        stream = watch.Watch(return_type="object")  # type: ignore[no-untyped-call]
        with self._lock:
            if self._stopping.is_set():
                raise _Stopped
            self._watch = stream

        def opened(*args: Any, **kwargs: Any) -> Any:
            """The watch request, for Watch.stream; its response kept where stop() finds it."""
            response = self._lister(*args, **kwargs)
            with self._lock:
                if self._stopping.is_set():
                    _cut(response)
                    response.release_conn()
                    raise _Stopped
                self._response = response
            return response

        kwargs: dict[str, Any] = {
            "timeout_seconds": WATCH_SERVER_TIMEOUT,
            # Bookmarks keep `version` recent on quiet resources: re-opening rarely meets 410.
            "allow_watch_bookmarks": True,
            "_request_timeout": REQUEST_TIMEOUT,
        }
        if version:
            kwargs["resource_version"] = version
        try:
            for event in stream.stream(opened, *self._args, **kwargs):  # type: ignore[no-untyped-call]
                obj: Obj = event["raw_object"]
                seen = (obj.get("metadata") or {}).get("resourceVersion")
                if seen:
                    version = str(seen)
                if event["type"] in WATCH_EVENTS:
                    self._post(loop, self._apply, event["type"], obj)
        finally:
            with self._lock:
                self._watch = self._response = None
        return version


class ClusterMirror:
    """HTTPRoutes, Services and Pods of all namespaces, or only the `kinds` asked for;
    ``on_change`` runs after each event, and before it ``on_object`` (if given) with the
    kind (ROUTES, SERVICES or PODS), key and new state (None: deleted) of each object the
    event changed."""

    def __init__(
        self,
        api_client: client.ApiClient,
        on_change: Callable[[], None],
        on_object: Callable[[str, Key, Obj | None], None] | None = None,
        kinds: Collection[str] = ALL_KINDS,
    ) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"no informer for {sorted(unknown)}")
        self.generation = 0
        self._on_change = on_change
        core = client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        listers: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
            ROUTES: (
                custom.list_cluster_custom_object,
                (HTTPROUTE_GROUP, HTTPROUTE_VERSION, HTTPROUTE_PLURAL),
            ),
            SERVICES: (core.list_service_for_all_namespaces, ()),
            PODS: (core.list_pod_for_all_namespaces, ()),
        }

        def told(kind: str) -> OnObject | None:
            return None if on_object is None else functools.partial(on_object, kind)

        # Only what is asked for is listed and watched: Pods are most of a cluster's churn.
        self.informers: dict[str, Informer] = {
            kind: Informer(kind, lister, self._bump, args, told(kind))
            for kind, (lister, args) in listers.items()
            if kind in kinds
        }

    @property
    def routes(self) -> Informer:
        return self.informers[ROUTES]

    @property
    def services(self) -> Informer:
        return self.informers[SERVICES]

    @property
    def pods(self) -> Informer:
        return self.informers[PODS]

    def _bump(self) -> None:
        self.generation += 1
        self._on_change()

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self.informers.values():
                group.create_task(informer.run(), name=f"informer-{informer.name}")
