"""Leader election: of the replicas of `tidegate run`, one acts on rollouts at a time.

Every replica watches (its cache stays warm, so a take-over is quick), but only the holder of
a `coordination.k8s.io` Lease runs reconcile loops. The election is the official client's
`kubernetes.leaderelection`, which is blocking: it runs in a daemon thread of its own, and
its "started leading" is handed to the event loop with `call_soon_threadsafe`.

Why no two replicas act at once:

- A standby takes the Lease over only once it has seen the same holder and renew time for
  the whole lease duration (15 s), and its write is a replace at the resourceVersion it read,
  so a renewal that lands first makes the take-over fail.
- The leader renews every retry period (2 s). It counts itself the holder only until the
  renew deadline (10 s) after the start of its last successful renewal, which is earlier
  than any standby can take over (the lease duration after it *saw* that renewal). Past the
  deadline the process exits at once (`os._exit`, non-zero): no cleanup runs that could
  still write, and the Deployment restarts it as a standby. A watchdog thread enforces the
  deadline even when a request to the API server hangs and the library's own renew loop
  cannot notice, and every write checks it just before it is sent (`may_act`), for a
  process that was paused as a whole (and whose watchdog has not run yet).
- Each replica's identity is new at every start (the pod name, or host and pid, plus a
  random suffix), so a restarted container never mistakes its predecessor's Lease for its
  own and waits for it to expire like any standby.

A leader stopped in an orderly way (SIGTERM) gives the Lease up once its loops have stopped
and every request they had in flight has finished: a standby then takes over at its next
try, within the retry period, instead of waiting out the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
from urllib3.exceptions import HTTPError

from tidegate import metrics

log = logging.getLogger("tidegate.leadership")

DEFAULT_LEASE_NAME = "tidegate-leader"
DEFAULT_LEASE_DURATION = 15
DEFAULT_RENEW_DEADLINE = 10
DEFAULT_RETRY_PERIOD = 2
# The exit status of a leader that could not renew its Lease in time.
EXIT_LEASE_LOST = 3
# Where Kubernetes mounts the pod's ServiceAccount namespace.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The library's jitter factor: it refuses a renew deadline not above 1.2 retry periods.
_JITTER = 1.2


def default_identity() -> str:
    """This process's name in the Lease: the pod's ($POD_NAME, from the downward API) or,
    out of a cluster, host and pid; with a suffix that is new at every start."""
    base = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}_{secrets.token_hex(4)}"


def default_namespace(service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """Where the Lease lives unless told: the pod's namespace ($POD_NAMESPACE, else the one
    its ServiceAccount is mounted from), or `default` out of a cluster."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return service_account_file.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class ElectionSettings:
    """The Lease and the timings, in whole seconds (the library writes them as integers)."""

    lease_name: str
    lease_namespace: str
    identity: str
    lease_duration: int = DEFAULT_LEASE_DURATION
    renew_deadline: int = DEFAULT_RENEW_DEADLINE
    retry_period: int = DEFAULT_RETRY_PERIOD

    def __post_init__(self) -> None:
        # Never another controller's Lease (kube-scheduler's, say) by a slip of a flag.
        if "tidegate" not in self.lease_name:
            raise ValueError(f"the Lease name must contain 'tidegate': {self.lease_name!r}")
        # The library checks these too, but with sys.exit() in whichever thread it runs.
        if self.retry_period < 1:
            raise ValueError("the retry period must be at least 1 s")
        if self.renew_deadline <= _JITTER * self.retry_period:
            raise ValueError("the renew deadline must be more than 1.2 retry periods")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")

    @property
    def request_limit(self) -> float:
        """How long any other Kubernetes request of the leader may take: well within the
        Lease's margin (its duration less the renew deadline), so that a write sent just
        before the renew deadline is answered, or given up on, before a standby may take
        over. (An API server may still apply a request given up on: writes are fenced by
        resourceVersion preconditions too.)"""
        return (self.lease_duration - self.renew_deadline) * 0.8

    @property
    def request_timeout(self) -> float:
        """Each Lease request's own limit: a hung one must not outlive the renew deadline."""
        return self.renew_deadline / 2


class _TimedLeases(client.CoordinationV1Api):
    """The three calls LeaseLock makes, each with a timeout (the library sets none)."""

    def __init__(self, api_client: client.ApiClient, timeout: float) -> None:
        super().__init__(api_client)
        self._timeout = timeout

    def read_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        return super().read_namespaced_lease(*args, **kwargs)

    def create_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        return super().create_namespaced_lease(*args, **kwargs)

    def replace_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self._timeout)
        return super().replace_namespaced_lease(*args, **kwargs)


class _Closed:
    """What a closed lock's `get` answers: not found, and not a 404 (so the library neither
    creates the Lease nor counts it as held; it tries again until it gives up)."""

    status = 0
    reason = "closed: this process is stopping"
    body = "{}"


_CLOSED = _Closed()


class RecordingLeaseLock(LeaseLock):
    """The library's LeaseLock, on the operator's kubeconfig rather than the library's global
    default configuration, noting when this identity last won a renewal.

    `LeaderElection.try_acquire_or_renew` reads the Lease (`get`), then writes it (`create`
    or `update`) with this identity as holder and the time it began as renew time. A write
    that succeeds means this process held the Lease from the moment its `get` began:
    `renewed_at` is that moment on the monotonic clock. Reads and writes go one at a time
    (`release` must not overlap a renewal), and once closed no write is made.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api: client.CoordinationV1Api,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name, namespace, identity)  # type: ignore[no-untyped-call]
        self.api_instance = api  # (the base class made one on the global configuration)
        self._clock = clock
        self._mutex = threading.Lock()
        self._attempt_began: float | None = None
        self.renewed_at: float | None = None
        self.holder: str | None = None  # as last read
        self._failure: str | None = None  # why the last read failed, if it did
        self._read_at = clock()  # when a read last got an answer (found, or 404)
        self.closed = False

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        # All of it under the mutex, the logging too: once `release` has closed the lock,
        # the election's daemon thread (which the library gives no way to stop) neither
        # asks nor writes a line. A daemon thread that writes to stderr while the
        # interpreter exits aborts the process (SIGABRT, `_enter_buffered_busy`) instead of
        # the orderly exit 0.
        with self._mutex:
            if self.closed:
                return False, _CLOSED
            self._attempt_began = self._clock()
            found, record = super().get(name, namespace)  # type: ignore[no-untyped-call]
            self._note(found, record, name, namespace)
        return found, record

    def _note(self, found: bool, record: Any, name: str, namespace: str) -> None:
        if found or getattr(record, "status", None) == 404:  # an answer, either way
            self._read_at = self._clock()
            self._failure = None
        if found:
            holder = getattr(record, "holder_identity", None)
            if holder and holder != self.holder and holder != self.identity:
                log.info("standing by: the Lease %s/%s is held by %s", namespace, name, holder)
            self.holder = holder
        elif getattr(record, "status", None) != 404:
            # The library says so at INFO on every try; once here, louder, while it lasts
            # (a missing grant, an unreachable API server): no replica acts meanwhile.
            failure = f"{getattr(record, 'status', '')} {getattr(record, 'reason', record)}"
            if failure != self._failure:
                log.warning("cannot read the Lease %s/%s: %s", namespace, name, failure)
            self._failure = failure

    def unread_for(self) -> float:
        """Seconds since the Lease last answered, while its reads fail; 0 while they do not."""
        if self._failure is None:
            return 0.0
        return max(0.0, self._clock() - self._read_at)

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        with self._mutex:
            if self.closed:
                return False
            began = self._attempt_began
            created: bool = super().create(name, namespace, election_record)  # type: ignore[no-untyped-call]
            if created:
                self.renewed_at = began
        return created

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        with self._mutex:
            if self.closed:
                return False
            began = self._attempt_began
            updated: bool = super().update(name, namespace, updated_record)  # type: ignore[no-untyped-call]
            if updated:
                self.renewed_at = began
        return updated

    def release(self) -> bool:
        """Make no more writes and, if this identity holds the Lease, clear its holder so that
        a standby takes it at its next try. True when the Lease was given up."""
        with self._mutex:
            self.closed = True
            lease = self.api_instance.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return False
            lease.spec.holder_identity = None  # (resourceVersion as read: no lost update)
            self.api_instance.replace_namespaced_lease(self.name, self.namespace, lease)
            return True


class Leadership:
    """This process's part in the election: a thread that campaigns for the Lease and, once
    it holds it, calls `on_elected` in the event loop; a watchdog that ends the process when
    the Lease can no longer be counted on.

    `exit` and `clock` are there for tests; the operator uses `os._exit` and the monotonic
    clock.
    """

    def __init__(
        self,
        settings: ElectionSettings,
        api_client: client.ApiClient,
        *,
        exit: Callable[[int], Any] = os._exit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.lock = RecordingLeaseLock(
            settings.lease_name,
            settings.lease_namespace,
            settings.identity,
            _TimedLeases(api_client, settings.request_timeout),
            clock,
        )
        self._exit = exit
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_elected: Callable[[], None] | None = None
        self._stopping = threading.Event()  # set when the process stops in an orderly way
        self.elected = threading.Event()  # set once this process leads (in its thread)

    def start(self, on_elected: Callable[[], None]) -> None:
        """Campaign from now on; `on_elected()` runs in the calling event loop once this
        process holds the Lease. Call from the event loop, once the watches run."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._on_elected = on_elected
        s = self.settings
        config = electionconfig.Config(  # type: ignore[no-untyped-call]
            self.lock,
            lease_duration=s.lease_duration,
            renew_deadline=s.renew_deadline,
            retry_period=s.retry_period,
            onstarted_leading=self._started_leading,
            onstopped_leading=self._stopped_leading,
        )
        log.info(
            "campaigning for the Lease %s/%s as %s", s.lease_namespace, s.lease_name, s.identity
        )
        election = leaderelection.LeaderElection(config)  # type: ignore[no-untyped-call]
        campaign = threading.Thread(
            target=self._campaign, args=(election,), name="election", daemon=True
        )
        campaign.start()

    def _campaign(self, election: leaderelection.LeaderElection) -> None:
        try:
            # It returns only once it has stopped leading (and called _stopped_leading).
            election.run()  # type: ignore[no-untyped-call]
        except BaseException:
            log.exception("the leader election failed")
            self._lost("the leader election failed")

    def _started_leading(self) -> None:
        # The library's thread; the event loop is where the reconcile loops live.
        self.elected.set()
        log.info("leading: holding the Lease as %s", self.settings.identity)
        threading.Thread(target=self._watch, name="lease watchdog", daemon=True).start()
        assert self._loop is not None and self._on_elected is not None
        with contextlib.suppress(RuntimeError):  # a closed event loop: the process is stopping
            self._loop.call_soon_threadsafe(self._on_elected)

    def _stopped_leading(self) -> None:
        if not self._stopping.is_set():
            self._lost("the Lease could not be renewed within the renew deadline")

    def may_act(self) -> bool:
        """Whether this process may write now, from any thread: it was elected, and its last
        renewal began less than the renew deadline ago. Past that, it exits (as the watchdog
        would once it runs: after a pause of the whole process, either may come first)."""
        if not self.elected.is_set() or self._stopping.is_set():
            return False
        renewed_at = self.lock.renewed_at
        if renewed_at is None or self._clock() - renewed_at >= self.settings.renew_deadline:
            self._lost("a write was due after the renew deadline had passed")
            return False
        return True

    def _watch(self) -> None:
        """While leading: end the process once the renew deadline has passed since the start
        of the last successful renewal (a hung request included)."""
        deadline = self.settings.renew_deadline
        while not self._stopping.is_set():
            renewed_at = self.lock.renewed_at
            assert renewed_at is not None  # it leads: a write succeeded
            left = renewed_at + deadline - self._clock()
            if left <= 0:
                self._lost("the Lease was not renewed within the renew deadline")
                return
            self._stopping.wait(min(left, 0.5))

    def _lost(self, why: str) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()  # once (the watchdog and the library may both get here)
        metrics.LEADER.set(0)
        log.critical("%s: exiting so that no two replicas act at once", why)
        for handler in logging.getLogger().handlers:
            handler.flush()  # os._exit does not
        self._exit(EXIT_LEASE_LOST)

    def release(self) -> None:
        """The process is stopping, and nothing it started still writes: give the Lease up."""
        self._stopping.set()
        if self._loop is None:
            return  # never campaigned
        try:
            released = self.lock.release()
        except (ApiException, HTTPError, OSError) as error:
            log.warning("could not give the Lease up (a standby takes it once expired): %s", error)
            return
        if released:
            metrics.LEADER.set(0)
            log.info("gave the Lease %s up", self.settings.lease_name)
