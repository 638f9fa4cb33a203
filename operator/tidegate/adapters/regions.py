"""Other regions' ProgressiveRollouts, read through the kubeconfigs of spec.waves.

Each distinct source (a Secret's kubeconfig, and a rollout in that cluster) has one watch,
held open in a thread of its own, shared by every local rollout that names it. Reads come
from what the watch last saw: a rollout that waits for another region costs that region
one open watch and no polling. Whoever reads a source is woken when it changes, or when it
becomes unreachable or reachable again.

The Secret is read from this cluster when a watch (re)connects, never per reconcile; each
watch lasts WATCH_SECONDS and is then made again, so a rotated credential is in use within
that time. A source no rollout reads any more is closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tidegate import api
from tidegate.adapters.cache import Key, Obj
from tidegate.adapters.kubeconfigs import KubeconfigRefused, parse_kubeconfig, reduce_kubeconfig
from tidegate.ports import AdapterError
from tidegate.waves import FOLLOWED_REASON, RegionRead, RemoteRollout

log = logging.getLogger(__name__)

# A watch is re-opened after this many seconds (server side), and a request that sends
# nothing for CONNECT_TIMEOUT/READ_TIMEOUT seconds counts as failed: a region that
# vanishes without closing its connections is still noticed.
WATCH_SECONDS = 60
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = WATCH_SECONDS + 15.0
# How long a first read waits for the first answer before calling the region unreachable.
FIRST_READ_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 1.0, 10.0
SECRET_TIMEOUT = 40.0  # longer than a Kubernetes request's own timeout


@dataclass(frozen=True)
class Source:
    """One remote rollout, and the credentials it is read with."""

    namespace: str  # where the Secret is (the local rollout's namespace)
    secret: str
    key: str
    remote_namespace: str
    rollout: str

    def describe(self) -> str:
        return f"{self.remote_namespace}/{self.rollout} (via Secret {self.namespace}/{self.secret})"


def source_of(namespace: str, region: api.WaveRegion) -> Source:
    ref = region.kubeconfig_secret_ref
    return Source(namespace, ref.name, ref.key, region.namespace or namespace, region.rollout)


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def remote_rollout(obj: Obj) -> RemoteRollout:
    """The fields waves compare, from a rollout written by any tidegate version."""
    status = obj.get("status") or {}

    def text(name: str) -> str | None:
        value = status.get(name)
        return value if isinstance(value, str) else None

    return RemoteRollout(
        phase=text("phase"),
        stable_release=text("stableRelease"),
        canary_release=text("canaryRelease"),
        stable_since=_parse_time(status.get("stableSince")),
        rejected_release=text("rejectedRelease"),
        followed=any(
            isinstance(c, dict)
            and c.get("type") == "Degraded"
            and c.get("status") == "True"
            and c.get("reason") == FOLLOWED_REASON
            for c in status.get("conditions") or ()
        ),
    )


class SecretProblem(Exception):
    """The Secret does not hold a usable kubeconfig."""


def kubeconfig_from_secret(secret: Mapping[str, str] | None, source: Source) -> dict[str, Any]:
    """The kubeconfig under the source's key of the Secret's (decoded) data, reduced to data
    (`kubeconfigs.reduce_kubeconfig`): the tenant who wrote it is not the operator's user."""
    where = f"Secret {source.namespace}/{source.secret}"
    if secret is None:
        raise SecretProblem(f"{where} does not exist")
    data = secret.get(source.key)
    if data is None:
        raise SecretProblem(f"{where} has no key {source.key!r}")
    try:
        return reduce_kubeconfig(parse_kubeconfig(data))
    except KubeconfigRefused as refused:
        raise SecretProblem(f"{where} key {source.key!r}: the kubeconfig {refused}") from None


@dataclass
class _Watched:
    """One source's watch and what it last saw (written by its thread, read on the loop)."""

    source: Source
    read: RegionRead = field(default_factory=lambda: RegionRead(False, error="connecting"))
    synced: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    readers: set[Key] = field(default_factory=set)


class KubeRegions:
    """The `Regions` port: remote rollouts through watches, one per source."""

    def __init__(
        self,
        read_secret: Callable[[str, str], Coroutine[Any, Any, Mapping[str, str] | None]],
        *,
        user_agent: str = "tidegate",
        wake: Callable[[Key], None] | None = None,
    ) -> None:
        # read_secret(namespace, name): this cluster's Secret's data, decoded (on the loop).
        self.read_secret = read_secret
        self.user_agent = user_agent
        self.wake = wake  # set by the operator once its loops exist
        self._watched: dict[Source, _Watched] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def read_all(
        self, rollout: Key, namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        """Every region's rollout as last seen, by cluster; `rollout` reads these from now
        on (and no others)."""
        self._loop = asyncio.get_running_loop()
        wanted = {region.cluster: source_of(namespace, region) for region in regions}
        self._retain(rollout, set(wanted.values()))
        reads: dict[str, RegionRead] = {}
        for cluster, source in wanted.items():
            watched = self._watched[source]
            if not watched.synced.is_set():
                # The first reader waits a little for the first answer rather than report
                # a region unreachable that was only not asked yet.
                await asyncio.to_thread(watched.synced.wait, FIRST_READ_TIMEOUT)
            reads[cluster] = watched.read
        return reads

    async def confirm_all(
        self, namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        """Each region's rollout read now, with a GET of its own; what the watch holds is
        updated with it (and a read that fails makes the region unreachable there too)."""
        self._loop = asyncio.get_running_loop()
        reads: dict[str, RegionRead] = {}
        for region in regions:
            source = source_of(namespace, region)
            read = await self._read_now(source)
            watched = self._watched.get(source)
            if watched is not None:
                self._publish(watched, read)
            reads[region.cluster] = read
        return reads

    async def _read_now(self, source: Source) -> RegionRead:
        try:
            secret = await self.read_secret(source.namespace, source.secret)
        except AdapterError as error:
            return RegionRead(False, error=str(error))

        def get() -> RegionRead:
            api_client = self._client_for(source, secret)
            try:
                listed = _list(client.CustomObjectsApi(api_client), source)
                return _read_of(listed.get("items") or [])
            finally:
                api_client.close()  # type: ignore[no-untyped-call]

        try:
            return await asyncio.to_thread(get)
        except Exception as error:
            return _unreachable(error)

    def forget(self, rollout: Key) -> None:
        self._retain(rollout, set())

    def close(self) -> None:
        for watched in self._watched.values():
            watched.stop.set()
        self._watched.clear()

    def _retain(self, rollout: Key, sources: set[Source]) -> None:
        for source, watched in list(self._watched.items()):
            if source in sources:
                watched.readers.add(rollout)
            else:
                watched.readers.discard(rollout)
                if not watched.readers:
                    watched.stop.set()
                    del self._watched[source]
        for source in sources - self._watched.keys():
            watched = _Watched(source, readers={rollout})
            thread = threading.Thread(
                target=self._run,
                args=(watched,),
                name=f"tidegate-region {source.describe()}",
                daemon=True,
            )
            self._watched[source] = watched
            thread.start()

    # -- in the source's thread --

    def _publish(self, watched: _Watched, read: RegionRead) -> None:
        changed = read != watched.read
        watched.read = read
        watched.synced.set()
        if changed and self._loop is not None and self.wake is not None:
            for key in list(watched.readers):
                self._loop.call_soon_threadsafe(self.wake, key)

    def _client(self, source: Source) -> client.ApiClient:
        """A client for the source, from the Secret as it is now (read on the loop)."""
        assert self._loop is not None
        reading = asyncio.run_coroutine_threadsafe(
            self.read_secret(source.namespace, source.secret), self._loop
        )
        try:
            secret = reading.result(SECRET_TIMEOUT)
        except AdapterError as error:
            raise SecretProblem(str(error)) from None
        return self._client_for(source, secret)

    def _client_for(self, source: Source, secret: Mapping[str, str] | None) -> client.ApiClient:
        kubeconfig = kubeconfig_from_secret(secret, source)
        try:
            api_client = config.new_client_from_config_dict(kubeconfig)  # type: ignore[no-untyped-call]
        except (config.ConfigException, KeyError, TypeError, ValueError) as error:
            # The reduced kubeconfig holds credentials: the message names the error's kind only.
            raise SecretProblem(
                f"Secret {source.namespace}/{source.secret} key {source.key!r}: the kubeconfig "
                f"is not usable ({type(error).__name__})"
            ) from None
        api_client.user_agent = self.user_agent
        return api_client  # type: ignore[no-any-return]

    def _run(self, watched: _Watched) -> None:
        source, delay = watched.source, RETRY_MIN
        while not watched.stop.is_set():
            try:
                self._follow(watched)
                delay = RETRY_MIN
            except Exception as error:
                if watched.stop.is_set():
                    # Closed (the process may be exiting): a daemon thread writes nothing
                    # then, since a write to stderr at interpreter exit aborts the process.
                    return
                if not isinstance(error, _EXPECTED):
                    log.exception("region %s: watch failed", source.describe())
                self._publish(watched, _unreachable(error))
            if watched.stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX)

    def _follow(self, watched: _Watched) -> None:
        """List the rollout, then follow it until the watch ends or fails."""
        source = watched.source
        api_client = self._client(source)
        try:
            custom = client.CustomObjectsApi(api_client)
            listed = _list(custom, source)
            self._publish(watched, _read_of(listed.get("items") or []))
            version = listed["metadata"]["resourceVersion"]
            # One watch window, then back to _run, which reads the Secret again and lists
            # again: a rotated token is in use within WATCH_SECONDS, long before the old one
            # expires (an open watch outlives its token's expiry; the next request would not).
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            for event in stream.stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object,
                *_arguments(source),
                field_selector=_selector(source),
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            ):
                if watched.stop.is_set():
                    return
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    return  # (410 Gone: too old) listed again
                if kind == "DELETED":
                    self._publish(watched, RegionRead(True, None))
                elif kind != "BOOKMARK":
                    self._publish(watched, RegionRead(True, remote_rollout(obj)))
        finally:
            api_client.close()  # type: ignore[no-untyped-call]


def _arguments(source: Source) -> tuple[str, str, str, str]:
    return (api.GROUP, api.VERSION, source.remote_namespace, api.PLURAL)


def _selector(source: Source) -> str:
    return f"metadata.name={source.rollout}"


def _list(custom: client.CustomObjectsApi, source: Source) -> Obj:
    """The source's rollout (a list of one, or none), as the API server has it now."""
    listed: Obj = custom.list_namespaced_custom_object(  # type: ignore[assignment]
        *_arguments(source),
        field_selector=_selector(source),
        _request_timeout=(CONNECT_TIMEOUT, CONNECT_TIMEOUT * 2),
    )
    return listed


# A connection that failed or an answer that could not be read; with a bad Secret and the
# API server's refusals, what a region's watch expects and logs no traceback for.
_NO_ANSWER = (HTTPError, OSError, ValueError)
_EXPECTED = (SecretProblem, ApiException, *_NO_ANSWER)


def _unreachable(error: Exception) -> RegionRead:
    """Why a region could not be read, as its status says it."""
    if isinstance(error, SecretProblem):
        return RegionRead(False, error=str(error))
    if isinstance(error, ApiException):
        # The status code with its standard phrase: the reason text is the server's own.
        return RegionRead(False, error=f"the API server said {_status_text(error.status)}")
    if isinstance(error, _NO_ANSWER):
        return RegionRead(False, error=f"no answer: {error}")
    return RegionRead(False, error=f"{type(error).__name__}: {error}")


def _status_text(status: object) -> str:
    try:
        return f"{status} {HTTPStatus(int(status)).phrase}"  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "an unknown status"


def _read_of(items: list[Obj]) -> RegionRead:
    return RegionRead(True, remote_rollout(items[0]) if items else None)
