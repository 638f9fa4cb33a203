"""Undo and spec.rollbackWindow through the reconcile loop, against recording fakes: the
target gets the former template back from its copy, which was kept at zero replicas."""

from __future__ import annotations

from fakes import NAME, NAMESPACE, World, example_spec
from test_reconciler import reconciler, settle, until_idle

from tidegate.api import UNDO_ANNOTATION
from tidegate.revisions import template_revision


async def promoted_world() -> World:
    """1.1.0 promoted over 1.0.0 with rollbackWindow 1, and everything settled since."""
    world = World()
    world.add_target()
    world.add_rollout(example_spec(rollbackWindow={"revisions": 1}))
    await settle(world, {"Initialized"})
    await until_idle(world)
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"})
    await until_idle(world)
    return world


async def test_the_copy_before_is_kept_at_zero_inside_the_window() -> None:
    world = await promoted_world()
    old, new = world.revision_of("1.0.0"), world.revision_of("1.1.0")
    assert set(world.by_revision) == {old, new}
    assert world.by_revision[old].replicas == 0
    assert ("remove", old, True) not in world.calls
    assert world.status["stableHistory"] == [old]
    assert world.status["retiring"] == [old]


async def test_undo_restores_the_template_and_serves_the_version_before() -> None:
    world = await promoted_world()
    old, new = world.revision_of("1.0.0"), world.revision_of("1.1.0")
    assert world.rollout is not None
    world.rollout["metadata"]["annotations"][UNDO_ANNOTATION] = "alice"
    await until_idle(world)
    assert world.target is not None
    assert template_revision(world.target["spec"]["template"]) == old
    assert ("remove_annotation", UNDO_ANNOTATION) in world.calls
    assert UNDO_ANNOTATION not in world.rollout["metadata"]["annotations"]
    status = world.status
    assert (status["phase"], status["stableRevision"]) == ("Succeeded", old)
    assert status["previousStableRevision"] == new
    assert status["rejectedRelease"] == f"template:{new}"  # for the regions after this one
    assert world.selects == {"stable": old, "canary": old}
    assert world.by_revision[old].replicas == 3
    # 1.1.0 is in the window now: kept at zero, not removed.
    assert world.by_revision[new].replicas == 0
    reasons = [r for _, r, _ in world.events()]
    assert "UndoAsked" in reasons and "RolledBackFast" in reasons
    assert reasons.count("RolloutStarted") == 1  # the rollout of 1.1.0 only
    # Asked once, acted on once: nothing more happens on the next pass.
    calls = len(world.calls)
    assert await reconciler(world).reconcile(NAMESPACE, NAME) is None
    assert "restore_template" not in world.names()[calls:]
