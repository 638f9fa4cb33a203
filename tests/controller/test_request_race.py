"""A request answered once, even when the watch cache is behind the operator's own writes.

Here the rollouts port is the real `KubeRollouts`, over a fake API whose watch cache delivers
the versions the API server wrote only when the test says so: the status write's event may
come back before the event of the annotation's removal, as the two are separate writes.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from fakes import NAME, NAMESPACE, World, example_spec, merge_patch
from test_reconciler import settle

from tidegate.adapters.kube import KubeError
from tidegate.adapters.kube_rollouts import KubeRollouts
from tidegate.api import PROMOTE_ANNOTATION
from tidegate.reconciler import Reconciler

Obj = dict[str, Any]


class LaggingKube:
    """The calls `KubeRollouts` makes, on the world's rollout. Every write is a new
    resourceVersion; reads come from a cache that holds the version last delivered."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.cache = object()  # there is a cache: KubeRollouts reads from it
        self.written: list[Obj] = []  # every version the API server stored, oldest first
        self._store(world.rollout)
        self.deliver()

    def _store(self, rollout: Obj | None) -> Obj:
        assert rollout is not None
        rollout["metadata"]["resourceVersion"] = str(100 + len(self.written))
        self.written.append(copy.deepcopy(rollout))
        return copy.deepcopy(rollout)

    def deliver(self, count: int | None = None) -> None:
        """The watch has delivered the first `count` versions written (all by default)."""
        self.cached = copy.deepcopy(self.written[(count or len(self.written)) - 1])

    async def read(self, kind: str, namespace: str, name: str, *, fresh: bool = False) -> Obj:
        assert kind == "progressiverollouts" and name == NAME
        return copy.deepcopy(self.world.rollout if fresh else self.cached)

    async def patch(
        self, kind: str, namespace: str, name: str, body: Obj, *, status: bool = False
    ) -> Obj:
        assert kind == "progressiverollouts" and name == NAME and self.world.rollout is not None
        self.world.record("patch_rollout", body)
        wanted = body.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != self.world.rollout["metadata"]["resourceVersion"]:
            raise KubeError(409, "patch", name, "the object has been modified")
        patched = merge_patch(self.world.rollout, body)
        self.world.rollout.clear()
        self.world.rollout.update(patched)
        return self._store(self.world.rollout)


async def test_one_promote_ends_one_pause_when_the_annotation_event_comes_late() -> None:
    steps = [{"setWeight": 10}, {"pause": {}}, {"pause": {}}, {"setWeight": 20}]
    world = World()
    world.add_target()
    world.add_rollout(example_spec(strategy={"canary": {"steps": steps}}))
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Paused"})
    assert world.status["currentStepIndex"] == 1

    kube = LaggingKube(world)
    rec = Reconciler(
        replace(world.ports(), rollouts=KubeRollouts(kube)),  # type: ignore[arg-type]
        "http://prometheus.test:9090",
        clock=world.clock,
    )
    assert world.rollout is not None
    world.rollout["metadata"]["annotations"][PROMOTE_ANNOTATION] = "alice"
    kube._store(world.rollout)
    kube.deliver()
    annotated = len(kube.written)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["currentStepIndex"] == 2  # the first pause ended, the second began
    assert PROMOTE_ANNOTATION not in world.rollout["metadata"]["annotations"]
    # The writes: the status (the annotation still there), then the annotation removed.
    status_write = annotated + 1
    assert PROMOTE_ANNOTATION in kube.written[status_write - 1]["metadata"]["annotations"]
    assert PROMOTE_ANNOTATION not in kube.written[status_write]["metadata"]["annotations"]
    removal = status_write + 1
    # The status write's event is back (it wakes the rollout); the removal's is not yet.
    kube.deliver(status_write)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["currentStepIndex"] == 2, "one promote ended two pauses"
    assert world.status["phase"] == "Paused"
    kube.deliver(removal)
    await rec.reconcile(NAMESPACE, NAME)
    assert world.status["currentStepIndex"] == 2


async def test_the_cache_is_trusted_again_once_it_has_caught_up() -> None:
    world = World()
    world.add_target()
    world.add_rollout()
    await settle(world, {"Initialized"})
    kube = LaggingKube(world)
    rollouts = KubeRollouts(kube)  # type: ignore[arg-type]
    await rollouts.remove_annotation(NAMESPACE, NAME, PROMOTE_ANNOTATION)
    assert await rollouts.get(NAMESPACE, NAME) == world.rollout  # asked afresh
    kube.deliver()
    assert await rollouts.get(NAMESPACE, NAME) == kube.cached
