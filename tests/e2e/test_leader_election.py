"""Two replicas of the operator on one namespace: one acts, the other stands by, and takes
over when the first dies, is stopped, or is paused past its renew deadline.

Who acted is read from the API server's audit log, not from the operators: each one's
requests carry its identity in their user agent (`tidegate/<version> (<identity>)`). Writes
are what counts as acting (a standby reads: its watches keep its cache warm); the Lease's
own requests are left out, since campaigning for it is what a standby does.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rollout_support import RouteWatch, Shop, events, get, set_version

from tidegate.leadership import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    EXIT_LEASE_LOST,
)
from tidegate_devenv import audit
from tidegate_devenv.audit import AuditedRequest
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import OperatorProcess, start_operator
from tidegate_devenv.waiting import wait_until

# The canary example's weights, each seen once, in order, then all back on stable.
EVERY_STEP_ONCE = [0, 10, 30, 60, 0]


@pytest.fixture(autouse=True)
def audited() -> None:
    if os.environ.get("TIDEGATE_TEST_KUBECONFIG"):
        pytest.skip("who wrote what is read from the local API server's audit log")


@pytest.fixture
def start_standby(
    environment: EnvironmentInfo, tmp_path: Path
) -> Iterator[Callable[[str], OperatorProcess]]:
    """A second operator on a namespace (and so on the first one's Lease), stopped after."""
    started: list[OperatorProcess] = []

    def start(namespace: str) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started) + 2}.log"
        started.append(start_operator(environment, log, namespaces=[namespace]))
        return started[-1]

    yield start
    for operator in started:
        operator.stop()


def writes(
    environment: EnvironmentInfo, namespace: str, operator: OperatorProcess
) -> list[AuditedRequest]:
    """The operator's writes in the namespace, but for its Lease, in the order received."""
    log = audit.audit_log(Path(environment.state_dir))
    found = [
        request
        for request in map(audit.audited, audit.read_events(log))
        if request.namespace == namespace
        and request.is_write
        and request.call is not None
        and request.call.resource != "leases"
        and request.user_agent.endswith(f"({operator.identity})")
    ]
    return sorted(found, key=lambda r: r.received or datetime.min.replace(tzinfo=UTC))


def kopf_writes(environment: EnvironmentInfo, namespace: str) -> list[AuditedRequest]:
    """Writes with kopf's own user agent (an Event it posts when a handler fails), which
    could be either operator's: there must be none."""
    log = audit.audit_log(Path(environment.state_dir))
    return [
        request
        for request in map(audit.audited, audit.read_events(log))
        if request.namespace == namespace
        and request.is_write
        and request.user_agent.startswith("kopf/")
    ]


def first_received(requests: list[AuditedRequest]) -> datetime:
    assert requests and requests[0].received is not None
    return requests[0].received


def last_completed(requests: list[AuditedRequest]) -> datetime:
    assert requests and all(r.completed is not None for r in requests)
    return max(r.completed for r in requests if r.completed is not None)


def finish(shop: Shop, route: RouteWatch) -> None:
    """Until the rollout has succeeded and the route's watch has seen it back on stable (the
    watch may lag the status)."""
    shop.wait_phase("Succeeded", 120)
    assert shop.weight() == 0
    wait_until(
        lambda: route.weights()[-1], "the watch to see all on stable", 10, until=lambda w: w == 0
    )


def holder(kubectl: KubectlRunner, namespace: str) -> str | None:
    lease = get(kubectl, namespace, "lease", "tidegate-leader")
    found: str | None = lease["spec"].get("holderIdentity")
    return found


def reasons(kubectl: KubectlRunner, namespace: str) -> list[str]:
    return [e["reason"] for e in events(kubectl, namespace)]


def test_the_standby_finishes_the_rollout_of_a_killed_leader(
    start_shop: Callable[..., Shop],
    start_standby: Callable[[str], OperatorProcess],
    environment: EnvironmentInfo,
) -> None:
    shop = start_shop()  # its operator, alone on the Lease, leads and initialises the rollout
    leader = shop.operator
    assert leader.leading()
    standby = start_standby(shop.namespace)  # ready: watching, not leading
    assert not standby.leading() and holder(shop.kubectl, shop.namespace) == leader.identity

    route = RouteWatch(shop.kubectl, shop.namespace, "shop")
    try:
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        shop.wait_status(lambda s: s.get("currentStepIndex") == 1, "the second step")
        assert leader.leading() and not standby.leading()
        killed_at, killed = datetime.now(UTC), time.monotonic()
        leader.process.kill()
        leader.process.wait()
        wait_until(standby.leading, "the standby to lead", DEFAULT_LEASE_DURATION + 15)
        took = time.monotonic() - killed
        finish(shop, route)
    finally:
        route.stop()
    print(f"\ntake-over after the leader's SIGKILL: {took:.1f}s")

    # The standby waited for the Lease to expire: the lease duration from when it saw the
    # last renewal, which was made at most a retry period (and that request's time) before
    # the kill, and which it saw within a retry period of its own; then it took the Lease at
    # its next try, within another retry period. (2 s of slack for a loaded machine.)
    low = DEFAULT_LEASE_DURATION - DEFAULT_RETRY_PERIOD - 2
    assert low <= took <= DEFAULT_LEASE_DURATION + 2 * DEFAULT_RETRY_PERIOD + 2, took
    assert holder(shop.kubectl, shop.namespace) == standby.identity

    # At no point did both act: the standby wrote nothing while the leader lived, and the
    # leader's last write was complete before the standby's first one arrived.
    by_leader = writes(environment, shop.namespace, leader)
    by_standby = writes(environment, shop.namespace, standby)
    assert by_leader and by_standby
    assert first_received(by_standby) > killed_at
    assert last_completed(by_leader) < first_received(by_standby)
    assert kopf_writes(environment, shop.namespace) == []

    # It went on from the second step: no step back, no second start, one promotion.
    assert route.weights() == EVERY_STEP_ONCE, route.weights()
    assert reasons(shop.kubectl, shop.namespace).count("RolloutStarted") == 1
    assert reasons(shop.kubectl, shop.namespace).count("Promoted") == 1
    assert shop.status()["stableRevision"]


def test_a_leader_stopped_in_order_hands_over_at_once(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    start_standby: Callable[[str], OperatorProcess],
) -> None:
    first = start_standby(namespace)
    wait_until(first.leading, "the first operator to lead", 30)
    second = start_standby(namespace)
    assert not second.leading()
    stopping = time.monotonic()
    first.stop()  # SIGTERM: it stops acting, then gives the Lease up, then exits
    assert first.process.wait(1) == 0
    exited = time.monotonic()
    wait_until(second.leading, "the second operator to lead", DEFAULT_LEASE_DURATION)
    took, after_exit = time.monotonic() - stopping, time.monotonic() - exited
    print(
        f"\ntake-over after the leader's SIGTERM: {took:.1f}s ({after_exit:.1f}s after it exited)"
    )
    # At the standby's next try, not after the lease duration it would wait on a dead leader.
    assert after_exit < DEFAULT_RETRY_PERIOD + 2, after_exit
    assert holder(kubectl, namespace) == second.identity


def test_a_leader_paused_past_its_renew_deadline_exits_without_writing(
    start_shop: Callable[..., Shop],
    start_standby: Callable[[str], OperatorProcess],
    environment: EnvironmentInfo,
) -> None:
    shop = start_shop()
    leader = shop.operator
    assert leader.leading()
    standby = start_standby(shop.namespace)
    route = RouteWatch(shop.kubectl, shop.namespace, "shop")
    # The whole process stops (as in a long pause of its node or VM): no thread renews.
    paused_at = datetime.now(UTC)
    os.kill(leader.process.pid, signal.SIGSTOP)
    try:
        wait_until(standby.leading, "the standby to lead", DEFAULT_LEASE_DURATION + 15)
        # Work for the old leader's loops, which on waking see the new revision at once.
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        shop.wait_status(lambda s: s.get("phase") == "Progressing", "the new leader to start")
    except BaseException:
        route.stop()
        raise
    finally:
        os.kill(leader.process.pid, signal.SIGCONT)
    try:
        # Past its renew deadline, it exits at once, with the status that says why.
        assert leader.process.wait(DEFAULT_RENEW_DEADLINE) == EXIT_LEASE_LOST
        finish(shop, route)
    finally:
        route.stop()
    assert "exiting so that no two replicas act at once" in leader.log.read_text()
    assert route.weights() == EVERY_STEP_ONCE, route.weights()
    assert reasons(shop.kubectl, shop.namespace).count("Promoted") == 1
    # Everything the old leader wrote, it wrote before the pause.
    by_leader = writes(environment, shop.namespace, leader)
    assert by_leader and last_completed(by_leader) < paused_at
    assert first_received(writes(environment, shop.namespace, standby)) > paused_at
