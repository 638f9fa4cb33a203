"""The per-rollout loops and the kopf handlers, in virtual time (looptime).

The loop's timers (the engine's requeue delays, the idle resync, the retry after an error)
run on the event loop's clock, which looptime moves forward whenever every task waits; so
a minute of idling takes no real time, and the times asserted are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import kopf
import pytest
from fakes import EPOCH, NAME, NAMESPACE, World

from tidegate import handlers, metrics
from tidegate.handlers import IDLE_RESYNC_SECONDS, Rollouts
from tidegate.ports import HAND_BACK_FINALIZER
from tidegate.reconciler import Reconciler

KEY = (NAMESPACE, NAME)


class Recorded:
    """Wraps a reconciler: when each reconcile ran (loop time), and a way to wait for more."""

    def __init__(self, inner: Reconciler) -> None:
        self.inner = inner
        self.times: list[float] = []
        self.changed = asyncio.Condition()

    async def reconcile(self, namespace: str, name: str) -> float | None:
        try:
            return await self.inner.reconcile(namespace, name)
        finally:
            self.times.append(asyncio.get_running_loop().time())
            async with self.changed:
                self.changed.notify_all()

    async def let_go(self, namespace: str) -> int:
        return await self.inner.let_go(namespace)

    async def wait_for(self, test: Callable[[], bool], timeout: float) -> None:
        """Until `test()` holds after some reconcile; a timeout (in loop time) fails."""

        async def until() -> None:
            async with self.changed:
                await self.changed.wait_for(test)

        await asyncio.wait_for(until(), timeout)


def looping(world: World) -> tuple[Rollouts, Recorded]:
    loop = asyncio.get_running_loop()
    inner = Reconciler(
        world.ports(),
        "http://prometheus.test",
        clock=lambda: EPOCH + timedelta(seconds=loop.time()),
    )
    recorded = Recorded(inner)
    rollouts = Rollouts(recorded)  # type: ignore[arg-type]
    # Whatever the reconcile writes comes back as a watch event that wakes the rollout.
    world.listeners.append(lambda: rollouts.wake(KEY))
    return rollouts, recorded


def initialized_world() -> World:
    world = World()
    world.add_target()
    world.add_rollout()
    return world


def reconciles(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("tidegate_reconciles_total", {"result": result}) or 0


@pytest.mark.looptime
async def test_an_idle_rollout_is_looked_at_once_per_resync_period() -> None:
    rollouts, recorded = looping(initialized_world())
    rollouts.ensure_running(KEY)
    # (The target is scaled away a scale-down delay after the route is seen applied.)
    await recorded.wait_for(lambda: len(recorded.times) >= 10, timeout=10 * IDLE_RESYNC_SECONDS)
    await rollouts.stop_all()
    # Initialising takes a few quick passes; after that, one per resync period.
    gaps = [b - a for a, b in zip(recorded.times[-3:], recorded.times[-2:], strict=False)]
    assert gaps == [IDLE_RESYNC_SECONDS, IDLE_RESYNC_SECONDS]


@pytest.mark.looptime
async def test_a_wake_reconciles_at_once() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    await asyncio.sleep(5)  # virtual: the loop now waits out its idle resync
    seen, woken_at = len(recorded.times), asyncio.get_running_loop().time()
    rollouts.wake(KEY)
    await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    assert recorded.times[-1] == woken_at
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_ensure_running_twice_wakes_the_one_loop() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    rollouts.ensure_running(KEY)
    task = rollouts.tasks[KEY]
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    seen = len(recorded.times)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    assert rollouts.tasks[KEY] is task and len(rollouts.tasks) == 1
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_a_finished_loop_is_started_again() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    rollouts.ensure_running(KEY)
    first = rollouts.tasks[KEY]
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    rollouts.ensure_running(KEY)
    assert rollouts.tasks[KEY] is not first
    await recorded.wait_for(lambda: len(recorded.times) >= 1, timeout=1)
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_a_failing_reconcile_is_retried_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = initialized_world()
    world.fail["get_rollout"] = ConnectionError("the API server went away")
    rollouts, recorded = looping(world)
    errors_before = reconciles("error")
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: len(recorded.times) >= 5, timeout=60)
    gaps = [b - a for a, b in zip(recorded.times, recorded.times[1:], strict=False)]
    assert gaps[:4] == [1, 2, 4, 8]  # backing off
    assert reconciles("error") - errors_before >= 5
    # The traceback once; after that a line per retry.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "reconcile failed; retrying" in tracebacks[0].getMessage()
    assert any("reconcile failed again" in r.getMessage() for r in caplog.records)
    # Once the API server answers again the rollout proceeds.
    del world.fail["get_rollout"]
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_a_healthy_canary_is_promoted_on_the_engines_own_timers() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    oks_before = reconciles("ok")
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    started = asyncio.get_running_loop().time()
    world.set_version("1.1.0")
    rollouts.wake(KEY)  # as a Deployment event would
    await recorded.wait_for(lambda: world.status.get("phase") == "Succeeded", timeout=600)
    took = asyncio.get_running_loop().time() - started
    # Three weights, each analysed twice (failureLimit 2 needs passes) every 4s, in well
    # under the idle resync: the engine's own delays drive the loop, not the resync.
    assert took < IDLE_RESYNC_SECONDS, took
    assert reconciles("ok") > oks_before
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_forget_stops_the_loop() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    task = rollouts.tasks[KEY]
    rollouts.forget(KEY)
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(recorded.times)
    rollouts.wake(KEY)  # nothing to wake any more
    rollouts.forget(KEY)  # and forgetting twice is harmless
    with pytest.raises(TimeoutError):
        await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=3 * IDLE_RESYNC_SECONDS)
    assert KEY not in rollouts.tasks and KEY not in rollouts.wakeups


# --- the kopf handlers themselves -------------------------------------------------------------


def test_the_index_maps_the_target_and_both_copies_to_the_rollout() -> None:
    spec = {"targetRef": {"name": "shop"}}
    found = handlers.rollouts_by_deployment(namespace="ns", name="r", spec=spec)  # type: ignore[arg-type]
    assert found == {("ns", "shop"): "r", ("ns", "shop-stable"): "r", ("ns", "shop-canary"): "r"}
    assert handlers.rollouts_by_deployment(namespace="ns", name="r", spec={}) == {}  # type: ignore[arg-type]


@pytest.mark.looptime
async def test_rollout_events_start_wake_and_forget_loops() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts)
    body = kopf.Body({"metadata": {"generation": 1, "annotations": {}}})
    await handlers.rollout_changed(
        type="ADDED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    assert KEY in rollouts.tasks
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    seen = len(recorded.times)
    # Its status written (by this operator): nothing worth a reconcile.
    await handlers.rollout_changed(
        type="MODIFIED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    with pytest.raises(TimeoutError):
        await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    # A promotion asked for: a reconcile at once.
    asked = kopf.Body({"metadata": {"generation": 1, "annotations": {"tidegate.io/promote": "1"}}})
    await handlers.rollout_changed(
        type="MODIFIED", namespace=NAMESPACE, name=NAME, body=asked, memo=memo
    )
    await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    await handlers.rollout_changed(
        type="DELETED", namespace=NAMESPACE, name=NAME, body=asked, memo=memo
    )
    assert KEY not in rollouts.tasks
    await rollouts.stop_all()


def deleting(name: str) -> kopf.Body:
    return kopf.Body({"metadata": {"name": name, "deletionTimestamp": "2026-01-01T00:00:00Z"}})


@pytest.mark.looptime
async def test_a_namespace_being_deleted_stops_its_loops_and_lets_its_rollouts_go() -> None:
    """kopf stops watching a namespace being deleted, maybe before its rollouts are marked
    deleted: their loops stop, and each loses the hand-back finalizer at once, read from the
    API server, with nothing handed back and no Event (nothing can be created there)."""
    world = initialized_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts, namespaces=[NAMESPACE])
    body = kopf.Body({"metadata": {"generation": 1, "annotations": {}}})
    await handlers.rollout_changed(
        type="ADDED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    assert world.rollout is not None
    assert HAND_BACK_FINALIZER in world.rollout["metadata"]["finalizers"]
    # A namespace this operator does not serve: nothing.
    await handlers.namespace_changed(
        type="MODIFIED", name="other", body=deleting("other"), memo=memo
    )
    assert rollouts.terminating == {}
    world.calls.clear()
    await handlers.namespace_changed(
        type="MODIFIED", name=NAMESPACE, body=deleting(NAMESPACE), memo=memo
    )
    assert KEY not in rollouts.tasks  # its loop is stopped
    task = rollouts.terminating[NAMESPACE]
    assert task is not None
    await task
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]
    assert world.names() == ["list_rollouts", "set_finalizer"]  # nothing else, no Event
    # kopf may still bring the rollout's events for a moment: no loop starts again (its
    # reconcile would put the finalizer back).
    await handlers.rollout_changed(
        type="MODIFIED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    assert KEY not in rollouts.tasks
    await handlers.namespace_changed(
        type="DELETED", name=NAMESPACE, body=deleting(NAMESPACE), memo=memo
    )
    assert rollouts.terminating == {}
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_a_standby_lets_a_deleted_namespaces_rollouts_go_once_elected() -> None:
    world = initialized_world()
    assert world.rollout is not None
    world.rollout["metadata"]["finalizers"] = [HAND_BACK_FINALIZER]
    rollouts, _ = looping(world)
    rollouts.leading = False
    memo = SimpleNamespace(rollouts=rollouts, namespaces=[])  # all namespaces
    await handlers.namespace_changed(
        type="MODIFIED", name=NAMESPACE, body=deleting(NAMESPACE), memo=memo
    )
    assert rollouts.terminating == {NAMESPACE: None} and world.names() == []
    rollouts.lead()
    task = rollouts.terminating[NAMESPACE]
    assert task is not None
    await task
    assert HAND_BACK_FINALIZER not in world.rollout["metadata"]["finalizers"]
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_deployment_events_wake_the_rollouts_that_use_them() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    index = {(NAMESPACE, "shop"): [NAME]}
    seen = len(recorded.times)
    await handlers.deployment_changed(
        namespace=NAMESPACE, name="unrelated", labels={}, memo=memo, rollouts_by_deployment=index
    )
    with pytest.raises(TimeoutError):
        await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    # The target, by the index of what the rollouts name.
    await handlers.deployment_changed(
        namespace=NAMESPACE, name="shop", labels={}, memo=memo, rollouts_by_deployment=index
    )
    await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    # A copy, by the rollout its label names.
    seen = len(recorded.times)
    await handlers.deployment_changed(
        namespace=NAMESPACE,
        name="shop-0123456789",
        labels={"tidegate.io/rollout": NAME},
        memo=memo,
        rollouts_by_deployment=index,
    )
    await recorded.wait_for(lambda: len(recorded.times) > seen, timeout=1)
    await rollouts.stop_all()


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


async def test_startup_wires_the_operator_and_cleanup_stops_it(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    settings = SimpleNamespace(
        posting=SimpleNamespace(level=0), watching=SimpleNamespace(server_timeout=None)
    )
    memo = SimpleNamespace(
        kubeconfig=str(config),
        prometheus_url="http://prometheus.test",
        loadtester_url="http://loadtester.test:8080",
        identity="pod-1_abcd",
        leadership=None,
        ready=asyncio.Event(),
        notifications_secret=("ops", "tidegate-notifications"),
    )
    indices: dict[str, dict[object, object]] = {kind: {} for kind in handlers.CACHED}
    await handlers.configure(settings=settings, memo=memo, **indices)  # type: ignore[arg-type]
    assert not memo.ready.is_set()  # not before the watches run
    assert isinstance(memo.rollouts, Rollouts)
    assert not memo.rollouts.leading
    assert memo.rollouts.reconciler.default_prometheus_url == "http://prometheus.test"
    assert memo.rollouts.reconciler.default_loadtester_url == "http://loadtester.test:8080"
    assert memo.notifier.providers.secret == "ops/tidegate-notifications"
    assert memo.api_client.configuration.host == "https://127.0.0.1:1"
    assert memo.api_client.user_agent == "tidegate/0.1.0 (pod-1_abcd)"
    assert settings.watching.server_timeout == 300
    await handlers.watching(memo=memo)  # without leader election: it acts at once
    assert memo.ready.is_set() and memo.rollouts.leading
    memo.rollouts.ensure_running(KEY)  # its first reconcile fails: nothing listens there
    await handlers.close(memo=memo)
    assert memo.rollouts.tasks == {}


def test_the_cache_indices_keep_trimmed_copies_by_namespace_and_name() -> None:
    deployment = kopf.Body(
        {
            "metadata": {
                "name": "shop",
                "namespace": "ns",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {"replicas": 2, "template": {"spec": {}}, "paused": False},
            "status": {"readyReplicas": 2, "conditions": [{"type": "Available"}]},
        }
    )
    (key, trimmed), *_ = handlers.deployments(namespace="ns", name="shop", body=deployment).items()
    assert key == ("ns", "shop")
    assert trimmed == {
        "metadata": {"name": "shop", "namespace": "ns", "annotations": {}},
        "spec": {"replicas": 2, "template": {"spec": {}}},
        "status": {"readyReplicas": 2},
    }
    service = kopf.Body({"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}, "type": "X"}})
    assert handlers.services(namespace="ns", name="s", body=service)[("ns", "s")]["spec"] == {
        "selector": {"a": "b"}
    }
    route = kopf.Body({"metadata": {"name": "r"}, "spec": {"rules": [], "hostnames": ["h"]}})
    assert handlers.httproutes(namespace="ns", name="r", body=route)[("ns", "r")]["spec"] == {
        "rules": []
    }
    rollout = kopf.Body({"metadata": {"name": "p"}, "spec": {"x": 1}, "status": {"phase": "P"}})
    kept = handlers.progressiverollouts(namespace="ns", name="p", body=rollout)[("ns", "p")]
    assert (kept["spec"], kept["status"]) == ({"x": 1}, {"phase": "P"})


def test_rollouts_are_found_by_the_services_and_routes_they_use() -> None:
    spec = {
        "service": {"name": "shop"},
        "trafficRouting": {
            "gatewayAPI": {"httpRoute": "live", "previewHTTPRoute": "preview"},
            "service": {"previewService": "shop-preview"},
        },
    }
    by_service = handlers.rollouts_by_service(namespace="ns", name="r", spec=spec)  # type: ignore[arg-type]
    assert set(by_service) == {
        ("ns", "shop"),
        ("ns", "shop-stable"),
        ("ns", "shop-canary"),
        ("ns", "shop-preview"),
    }
    by_route = handlers.rollouts_by_route(namespace="ns", name="r", spec=spec)  # type: ignore[arg-type]
    assert set(by_route) == {("ns", "live"), ("ns", "preview")}
    assert handlers.rollouts_by_route(namespace="ns", name="r", spec={}) == {}  # type: ignore[arg-type]


@pytest.mark.looptime
async def test_service_and_route_events_wake_the_rollouts_that_use_them() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    for handler, index in (
        (handlers.service_changed, "rollouts_by_service"),
        (handlers.route_changed, "rollouts_by_route"),
    ):
        seen = len(recorded.times)
        await handler(  # type: ignore[operator]
            namespace=NAMESPACE,
            name="edited",
            memo=memo,
            **{index: {(NAMESPACE, "edited"): [NAME]}},
        )
        await recorded.wait_for(lambda seen=seen: len(recorded.times) > seen, timeout=1)  # type: ignore[misc]
    await rollouts.stop_all()


# --- leading and standing by -----------------------------------------------------------------


@pytest.mark.looptime
async def test_a_standby_notes_rollouts_and_runs_them_all_once_elected() -> None:
    world = initialized_world()
    rollouts, recorded = looping(world)
    rollouts.leading = False  # as the operator starts: not before it is elected
    memo = SimpleNamespace(rollouts=rollouts)
    body = kopf.Body({"metadata": {"generation": 1, "annotations": {}}})
    await handlers.rollout_changed(
        type="ADDED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    rollouts.ensure_running(KEY)  # and asked directly: still nothing
    rollouts.wake(KEY)
    await asyncio.sleep(3 * IDLE_RESYNC_SECONDS)
    assert rollouts.tasks == {} and recorded.times == [] and world.status == {}
    assert KEY in rollouts.fingerprints
    rollouts.lead()
    assert metrics.REGISTRY.get_sample_value("tidegate_leader") == 1
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    rollouts.lead()  # twice is harmless: still the one loop
    assert list(rollouts.tasks) == [KEY]
    await rollouts.stop_all()


@pytest.mark.looptime
async def test_a_rollout_deleted_while_standing_by_is_not_started() -> None:
    world = initialized_world()
    rollouts = Rollouts(Reconciler(world.ports(), "http://prometheus.test"), leading=False)
    memo = SimpleNamespace(rollouts=rollouts)
    body = kopf.Body({"metadata": {"generation": 1}})
    await handlers.rollout_changed(
        type="ADDED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    await handlers.rollout_changed(
        type="DELETED", namespace=NAMESPACE, name=NAME, body=body, memo=memo
    )
    rollouts.lead()
    assert rollouts.tasks == {}
    await rollouts.stop_all()


async def test_watching_makes_the_replica_ready_and_starts_its_campaign_once() -> None:
    started: list[object] = []
    leadership = SimpleNamespace(start=lambda on_elected: started.append(on_elected))
    rollouts = SimpleNamespace(lead=lambda: None)
    memo = SimpleNamespace(ready=asyncio.Event(), leadership=leadership, rollouts=rollouts)
    await handlers.watching(memo=memo)
    await handlers.watching(memo=memo)  # the CRD changed: nothing more to do
    assert memo.ready.is_set()
    assert started == [rollouts.lead]  # it acts only once elected


def test_watching_waits_for_the_progressiverollouts_crd_only() -> None:
    assert handlers._is_our_crd(name="progressiverollouts.tidegate.io")
    assert not handlers._is_our_crd(name="httproutes.gateway.networking.k8s.io")
