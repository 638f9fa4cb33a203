"""Leader election (`tidegate.leadership`) against an in-memory Lease API.

The fake API behaves as the API server does for what LeaseLock asks: 404 for a missing
Lease, 409 for a create of one that exists, and 409 for a replace at a stale
resourceVersion. The last test runs the official library's election loop itself, with two
candidates and short (whole-second) timings, in real time.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tidegate import cli, metrics
from tidegate.adapters import kube as kube_adapter
from tidegate.adapters.kube import Kube, KubeError
from tidegate.cli import build_parser
from tidegate.leadership import (
    EXIT_LEASE_LOST,
    ElectionSettings,
    Leadership,
    RecordingLeaseLock,
    default_identity,
    default_namespace,
)

NAMESPACE, NAME = "tidegate-system", "tidegate-leader"


class FakeLeases:
    """What LeaseLock calls of CoordinationV1Api, on one shared dict of Leases."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], client.V1Lease] = {}
        self.version = 0
        self.mutex = threading.Lock()
        self.writes: list[tuple[str, str | None]] = []  # (verb, holder written)
        self.refuse_writes_by: set[str] = set()  # identities whose writes time out

    def _conflict(self, why: str) -> ApiException:
        return ApiException(status=409, reason="Conflict", body=json.dumps({"code": 409, "m": why}))

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> client.V1Lease:
        with self.mutex:
            if (namespace, name) not in self.leases:
                raise ApiException(status=404, reason="Not Found", body=json.dumps({"code": 404}))
            return copy.deepcopy(self.leases[(namespace, name)])

    def _store(self, namespace: str, lease: client.V1Lease, verb: str) -> client.V1Lease:
        holder = lease.spec.holder_identity if lease.spec else None
        if holder in self.refuse_writes_by:
            raise ApiException(status=504, reason="Timeout", body="")
        self.version += 1
        stored = copy.deepcopy(lease)
        meta = stored.metadata
        name = meta["name"] if isinstance(meta, dict) else meta.name
        stored.metadata = client.V1ObjectMeta(
            name=name, namespace=namespace, resource_version=str(self.version)
        )
        self.leases[(namespace, name)] = stored
        self.writes.append((verb, holder))
        return copy.deepcopy(stored)

    def create_namespaced_lease(
        self, namespace: str, body: client.V1Lease, **_: Any
    ) -> client.V1Lease:
        with self.mutex:
            name = body.metadata["name"] if isinstance(body.metadata, dict) else body.metadata.name
            if (namespace, name) in self.leases:
                raise self._conflict("exists")
            return self._store(namespace, body, "create")

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, **_: Any
    ) -> client.V1Lease:
        with self.mutex:
            current = self.leases.get((namespace, name))
            if current is None:
                raise ApiException(status=404, reason="Not Found", body=json.dumps({"code": 404}))
            if body.metadata.resource_version != current.metadata.resource_version:
                raise self._conflict("stale resourceVersion")
            return self._store(namespace, body, "update")

    def holder(self) -> str | None:
        with self.mutex:
            lease = self.leases.get((NAMESPACE, NAME))
            return lease.spec.holder_identity if lease and lease.spec else None


def record(identity: str, at: str = "2024-06-11 10:00:00.000001") -> Any:
    from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

    return LeaderElectionRecord(identity, "15", at, at)


def lock_on(api: FakeLeases, identity: str, clock: Callable[[], float]) -> RecordingLeaseLock:
    return RecordingLeaseLock(NAME, NAMESPACE, identity, api, clock)  # type: ignore[arg-type]


class Ticks:
    """A clock that reads what the test sets."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- settings and defaults -------------------------------------------------------------------


def test_default_timings_are_accepted_and_bad_ones_refused() -> None:
    settings = ElectionSettings(NAME, NAMESPACE, "me")
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)
    assert settings.request_timeout < settings.renew_deadline
    # Any request of the leader is over before a standby may take over after a silence.
    assert settings.request_limit == 4.0
    assert settings.renew_deadline + settings.request_limit < settings.lease_duration
    with pytest.raises(ValueError, match="contain 'tidegate'"):
        ElectionSettings("leader", NAMESPACE, "me")
    assert ElectionSettings("blue-tidegate-leader", NAMESPACE, "me").lease_name
    with pytest.raises(ValueError, match="longer than the renew deadline"):
        ElectionSettings(NAME, NAMESPACE, "me", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match=r"1\.2 retry periods"):
        ElectionSettings(NAME, NAMESPACE, "me", renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError, match="at least 1 s"):
        ElectionSettings(NAME, NAMESPACE, "me", retry_period=0)


def test_identity_is_the_pod_name_with_a_suffix_new_at_each_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAME", "tidegate-7c9d-x2x")
    first, second = default_identity(), default_identity()
    assert first.startswith("tidegate-7c9d-x2x_") and second.startswith("tidegate-7c9d-x2x_")
    assert first != second  # a restarted container is not taken for its predecessor
    monkeypatch.delenv("POD_NAME")
    assert "-" in default_identity().rpartition("_")[0]  # host-pid


def test_the_lease_namespace_is_the_pods_else_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mounted = tmp_path / "namespace"
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert default_namespace(mounted) == "default"  # out of a cluster
    mounted.write_text("tidegate-system\n")
    assert default_namespace(mounted) == "tidegate-system"
    monkeypatch.setenv("POD_NAMESPACE", "from-downward-api")
    assert default_namespace(mounted) == "from-downward-api"


# --- the lock --------------------------------------------------------------------------------


def test_a_won_write_dates_the_lease_from_the_read_before_it() -> None:
    api, clock = FakeLeases(), Ticks(100.0)
    lock = lock_on(api, "a", clock)
    found, _ = lock.get(NAME, NAMESPACE)
    assert not found
    clock.now = 100.4  # the write comes later; the Lease was ours from the read on
    assert lock.create(NAME, NAMESPACE, record("a"))
    assert lock.renewed_at == 100.0
    clock.now = 102.0
    assert lock.get(NAME, NAMESPACE)[0]
    assert lock.update(NAME, NAMESPACE, record("a"))
    assert lock.renewed_at == 102.0


def test_a_refused_read_is_told_once_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    api, clock = FakeLeases(), Ticks()
    lock = lock_on(api, "a", clock)
    forbidden = ApiException(status=403, reason="Forbidden", body=json.dumps({"code": 403}))

    def refuse(*_: Any, **__: Any) -> Any:
        raise forbidden

    api.read_namespaced_lease = refuse  # type: ignore[method-assign]
    for _ in range(3):
        assert lock.get(NAME, NAMESPACE) == (False, forbidden)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"cannot read the Lease {NAMESPACE}/{NAME}: 403 Forbidden"]


def test_the_lease_counts_as_unread_from_its_last_answer_while_reads_fail() -> None:
    """What readiness reads (tidegate.health): a 404 is an answer, a refusal is not."""
    api, clock = FakeLeases(), Ticks(100.0)
    lock = lock_on(api, "a", clock)
    assert lock.get(NAME, NAMESPACE)[0] is False  # 404: the API server answered
    assert lock.unread_for() == 0.0
    read = api.read_namespaced_lease

    def refuse(*_: Any, **__: Any) -> Any:
        raise ApiException(status=503, reason="Service Unavailable", body="")

    api.read_namespaced_lease = refuse  # type: ignore[method-assign]
    clock.now = 102.0
    lock.get(NAME, NAMESPACE)
    clock.now = 130.0
    assert lock.unread_for() == 30.0  # since the 404 at 100, not since the first refusal
    api.read_namespaced_lease = read  # type: ignore[method-assign]
    lock.get(NAME, NAMESPACE)
    assert lock.unread_for() == 0.0


def test_a_lost_write_changes_nothing() -> None:
    api, clock = FakeLeases(), Ticks(100.0)
    a, b = lock_on(api, "a", clock), lock_on(api, "b", clock)
    a.get(NAME, NAMESPACE)
    assert a.create(NAME, NAMESPACE, record("a"))
    clock.now = 101.0
    assert b.get(NAME, NAMESPACE)[0]
    assert a.get(NAME, NAMESPACE)[0] and a.update(NAME, NAMESPACE, record("a"))  # a renews
    clock.now = 102.0
    assert not b.update(NAME, NAMESPACE, record("b"))  # at the resourceVersion it read
    assert b.renewed_at is None and api.holder() == "a"


def test_release_clears_the_holder_once_and_stops_every_write() -> None:
    api, clock = FakeLeases(), Ticks()
    a, b = lock_on(api, "a", clock), lock_on(api, "b", clock)
    a.get(NAME, NAMESPACE)
    a.create(NAME, NAMESPACE, record("a"))
    assert not b.release()  # not b's to give up
    assert api.holder() == "a"
    assert a.release()
    assert api.holder() is None
    a.get(NAME, NAMESPACE)
    assert not a.update(NAME, NAMESPACE, record("a"))  # closed: no more writes
    assert api.writes == [("create", "a"), ("update", None)]


def test_a_closed_lock_neither_reads_nor_logs(caplog: pytest.LogCaptureFixture) -> None:
    """After release, the election's daemon thread goes on calling `get` (the library has no
    stop) while the interpreter exits: it must not write a line then (a daemon thread
    writing to stderr at exit aborts the process), nor ask the API server anything."""
    api, clock = FakeLeases(), Ticks()
    a, b = lock_on(api, "a", clock), lock_on(api, "b", clock)
    a.get(NAME, NAMESPACE)
    a.create(NAME, NAMESPACE, record("a"))
    assert a.release()
    b.get(NAME, NAMESPACE)
    assert b.create(NAME, NAMESPACE, record("b")) or b.update(NAME, NAMESPACE, record("b"))
    reads: list[str] = []
    read = api.read_namespaced_lease

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append("read")
        return read(*args, **kwargs)

    api.read_namespaced_lease = counted  # type: ignore[method-assign]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        found, answer = a.get(NAME, NAMESPACE)  # b holds it now: once, this said so
    assert (found, reads, caplog.records) == (False, [], [])
    assert answer.status != 404  # so the library does not try to create it either


# --- the process's part ----------------------------------------------------------------------


@pytest.fixture
def exits() -> list[int]:
    return []


def leadership(
    api: FakeLeases, identity: str, exits: list[int], clock: Callable[[], float], **timings: int
) -> Leadership:
    settings = ElectionSettings(NAME, NAMESPACE, identity, **timings)
    found = Leadership(settings, client.ApiClient(), exit=exits.append, clock=clock)
    found.lock.api_instance = api
    return found


def test_the_watchdog_ends_a_leader_at_the_renew_deadline(exits: list[int]) -> None:
    clock = Ticks(100.0)
    leader = leadership(FakeLeases(), "a", exits, clock)
    leader.lock.renewed_at = 100.0
    metrics.LEADER.set(1)
    readings = iter([109.9, 110.0])
    leader._clock = lambda: next(readings)  # 0.1 s short of the deadline, then at it
    leader._watch()
    assert exits == [EXIT_LEASE_LOST]
    assert metrics.REGISTRY.get_sample_value("tidegate_leader") == 0


def test_losing_the_lease_ends_the_process_unless_it_is_stopping(exits: list[int]) -> None:
    leader = leadership(FakeLeases(), "a", exits, Ticks())
    leader._stopped_leading()
    leader._stopped_leading()  # (the watchdog and the library may both say so)
    assert exits == [EXIT_LEASE_LOST]
    stopping = leadership(FakeLeases(), "b", exits, Ticks())
    stopping.release()  # an orderly stop: the election may end now without an exit
    stopping._stopped_leading()
    assert exits == [EXIT_LEASE_LOST]


async def test_election_is_handed_to_the_event_loop(exits: list[int]) -> None:
    api = FakeLeases()
    leader = leadership(api, "a", exits, time.monotonic)
    elected = asyncio.Event()
    on_loop: list[bool] = []

    def on_elected() -> None:
        on_loop.append(asyncio.get_running_loop() is not None)
        elected.set()

    leader.start(on_elected)
    try:
        await asyncio.wait_for(elected.wait(), 5)
        assert on_loop == [True] and api.holder() == "a"
    finally:
        leader.release()
    assert api.holder() is None and exits == []


# --- the library's loop with two candidates ----------------------------------------------------


async def test_a_standby_takes_over_only_after_the_silent_leader_has_exited() -> None:
    """A leader whose renewals stop reaching the API server: it exits at its renew deadline,
    and the standby is elected only after that, a lease duration after the last renewal."""
    api = FakeLeases()
    events: list[tuple[str, str, float]] = []  # (identity, what, when)
    timings = {"lease_duration": 3, "renew_deadline": 2, "retry_period": 1}
    elected = {name: asyncio.Event() for name in ("a", "b")}

    def candidate(name: str) -> Leadership:
        def exit(code: int) -> None:
            events.append((name, f"exit {code}", time.monotonic()))

        def on_elected() -> None:
            events.append((name, "elected", time.monotonic()))
            elected[name].set()

        found = leadership(api, name, [], time.monotonic, **timings)
        found._exit = exit
        found.start(on_elected)
        return found

    a = candidate("a")
    await asyncio.wait_for(elected["a"].wait(), 5)
    b = candidate("b")
    try:
        await asyncio.sleep(0)
        assert api.holder() == "a"
        api.refuse_writes_by.add("a")  # a's renewals time out from now on
        stopped = time.monotonic()
        await asyncio.wait_for(elected["b"].wait(), 10)
    finally:
        b.release()
        a._stopping.set()
    order = [(who, what) for who, what, _ in events]
    assert order == [("a", "elected"), ("a", f"exit {EXIT_LEASE_LOST}"), ("b", "elected")], events
    a_exit, b_elected = events[1][2], events[2][2]
    assert a_exit - stopped <= timings["renew_deadline"] + 0.5
    assert b_elected - stopped >= timings["lease_duration"] - timings["retry_period"]


# --- the gate on every write -----------------------------------------------------------------


def test_may_act_only_while_elected_and_within_the_renew_deadline(exits: list[int]) -> None:
    clock = Ticks(100.0)
    leader = leadership(FakeLeases(), "a", exits, clock)
    assert not leader.may_act()  # standing by
    leader.elected.set()
    leader.lock.renewed_at = 100.0
    clock.now = 109.9
    assert leader.may_act() and exits == []
    clock.now = 110.0  # e.g. the whole process was paused, its watchdog too
    assert not leader.may_act()
    assert exits == [EXIT_LEASE_LOST]


async def test_a_write_the_gate_refuses_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[str] = []

    def send(api_client: object, method: str, path: str, **_: Any) -> Any:
        sent.append(method)
        return {"kind": "Deployment"}

    monkeypatch.setattr(kube_adapter, "send", send)
    kube = Kube(client.ApiClient(), may_write=lambda: False)
    path = kube_adapter.path_of("deployments", "ns", "shop")
    with pytest.raises(KubeError, match="not sent: this replica does not lead"):
        await kube.request("patch", "deployments ns/shop", "PATCH", path, body={})
    assert await kube.request("get", "deployments ns/shop", "GET", path) == {"kind": "Deployment"}
    assert sent == ["GET"]  # reads are not gated: a standby's cache is kopf's anyway


# --- the flags -------------------------------------------------------------------------------


def test_leader_election_is_on_by_default_and_its_flags_reach_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "tidegate-system")
    args = build_parser().parse_args(["run", "-A"])
    assert cli._election(args, "me") == ElectionSettings(NAME, "tidegate-system", "me")
    args = build_parser().parse_args(
        [
            "run",
            "-A",
            "--leader-election-id=tidegate-blue",
            "--leader-election-namespace=ops",
            "--leader-election-lease-duration=30",
            "--leader-election-renew-deadline=20",
        ]
    )
    settings = cli._election(args, "me")
    assert settings is not None
    assert (settings.lease_name, settings.lease_namespace) == ("tidegate-blue", "ops")
    assert (settings.lease_duration, settings.renew_deadline) == (30, 20)
    args = build_parser().parse_args(["run", "-A", "--no-leader-election"])
    assert cli._election(args, "me") is None


def test_bad_election_flags_are_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["run", "-A", "--leader-election-renew-deadline=20"])  # > lease duration
    assert code == 2
    assert "longer than the renew deadline" in capsys.readouterr().err
