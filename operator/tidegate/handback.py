"""Hand-back: a deleted ProgressiveRollout gives the application back to its own Deployment.

One step per pass, each waiting for what the watches report:

1. The target never runs a revision the rollout rejected: deleted while Failed or Aborted
   with the target still on the rejected template, the target gets the stable copy's
   template back first (a Warning Event says so). Changing the target's template again is
   how that revision would be rolled out again, now without tidegate.
2. The target is scaled back: to the recorded size, or with spec.autoscalerRef to the count
   the HPA copy had chosen for the stable copy (once running, the user's HPA sizes it).
3. Once it is ready: the user's Service gets its own selector back, the routes go back to
   it, and the gateway must report them applied.
4. The scale-down delay after that, 30 s at most (`status.handBackAt`): requests already
   routed to the copies finish there. None when the target is gone: the application is
   being removed, and nothing is handed back to.
5. The copies and tidegate's Services (and HPA copies) are given to the rollout to be
   garbage-collected with it, the claim is removed, then the finalizer.

A namespace being deleted is another matter (`let_go`): everything in it goes, so there is
nothing to hand back, and the finalizers go at once.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from pydantic import ValidationError

from tidegate import api
from tidegate.ports import HAND_BACK_FINALIZER, Obj, Workloads
from tidegate.revisions import template_revision

if TYPE_CHECKING:
    from tidegate.reconciler import Reconciler

log = logging.getLogger("tidegate.reconciler")
_REJECTED = (api.RolloutPhase.FAILED, api.RolloutPhase.ABORTED)
# The longest the copies serve requests already routed to them once the route is back on the
# user's Service: the default scale-down delay.
HAND_BACK_DRAIN_MAX = 30


async def hand_back(rec: Reconciler, rollout: Obj) -> float | None:
    """One step of the hand-back of a deleted rollout; seconds until the next (None: woken
    by a watch)."""
    meta = rollout["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if HAND_BACK_FINALIZER not in (meta.get("finalizers") or []):
        return None
    try:
        spec = api.RolloutSpec.model_validate(rollout.get("spec") or {})
    except ValidationError:
        spec = None  # nothing can be handed back to a target it cannot name
    if spec is not None and spec.on_delete is api.OnDelete.HAND_BACK:
        done, wait = await _give_back(rec, rollout, spec)
        if not done:
            return wait
    rec.wrote(
        (namespace, name),
        await rec.ports.rollouts.set_finalizer(rollout, HAND_BACK_FINALIZER, False),
    )
    return None


async def let_go(rec: Reconciler, namespace: str) -> int:
    """The namespace is being deleted: every rollout in it loses the hand-back finalizer at
    once, with nothing handed back (the application goes with the namespace). Read from
    the API server, not the watches, since kopf stops watching a namespace being deleted,
    and no Event is posted (nothing can be created in it any more). Returns how many still
    hold the finalizer (a write that met a conflict), to be tried again."""
    left = 0
    for rollout in await rec.ports.rollouts.list_fresh(namespace):
        meta = rollout["metadata"]
        if HAND_BACK_FINALIZER not in (meta.get("finalizers") or []):
            continue
        log.info(
            "%s/%s: its namespace is being deleted: nothing to hand back, letting it go",
            namespace,
            meta["name"],
        )
        written = await rec.ports.rollouts.set_finalizer(rollout, HAND_BACK_FINALIZER, False)
        if written is None:
            left += 1
    return left


async def _give_back(
    rec: Reconciler, rollout: Obj, spec: api.RolloutSpec
) -> tuple[bool, float | None]:
    """Steps 1 to 5: whether all is done (the finalizer may go), else how long to wait."""
    meta = rollout["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    raw_status = rollout.get("status") or {}
    status = api.RolloutStatus.model_validate(raw_status)
    workloads = rec.ports.workloads(namespace, name, spec)
    target = await workloads.target()
    if target is not None:
        if await _undo_rejected(rec, rollout, spec, status, workloads, target):
            return False, None  # woken when the target changes
        replicas = await _size(spec, status, workloads, target)
        if int(target["spec"].get("replicas", 1)) != replicas:
            await rec.event(
                rollout,
                "Normal",
                "HandingBack",
                f"Deleted: scaling Deployment {namespace}/{spec.target_ref.name} back "
                f"to {replicas} replicas before traffic goes back to it",
            )
            await workloads.restore_target(target, replicas)
            return False, None  # woken when it changes
        if not workloads.target_ready(target, replicas):
            return False, None
    router = rec.ports.router(namespace, spec)
    # Callers inside the cluster reach the user's pods again, as the route does.
    restored = await workloads.restore_service()
    if await router.release(spec.service.name) or restored or not await router.applied():
        return False, None  # woken when the gateway reports the route applied
    # The copies go with the rollout: not before requests already routed to them have had
    # the scale-down delay to finish. Unless the target is gone too: then the application
    # is being removed (its namespace deleted, the app pruned whole), the route has nothing
    # to send requests to but the copies, and a drain would only hold the deletion up.
    now = rec.clock()
    if target is not None:
        if status.hand_back_at is None:
            # At most HAND_BACK_DRAIN_MAX: a deletion (a whole namespace's, an app pruned) is
            # not held for as long as a spec may ask the copies to linger after a promotion.
            delay = min(spec.strategy.scale_down_delay(rolled_back=False), HAND_BACK_DRAIN_MAX)
            at = now + timedelta(seconds=delay)
            stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
            await rec.patch_status(namespace, name, {"handBackAt": stamp})
            return False, float(delay)
        if now < status.hand_back_at:
            return False, max((status.hand_back_at - now).total_seconds(), 0.1)
    await workloads.hand_over(rollout)
    await rec.ports.autoscalers(namespace, name, spec).hand_over(rollout)
    if target is not None:
        await workloads.unclaim_target(target)
    await rec.event(
        rollout,
        "Normal",
        "HandedBack",
        f"Traffic is back on Service {namespace}/{spec.service.name} and Deployment "
        f"{namespace}/{spec.target_ref.name}; tidegate's copies go with the rollout",
    )
    return True, None


async def _undo_rejected(
    rec: Reconciler,
    rollout: Obj,
    spec: api.RolloutSpec,
    status: api.RolloutStatus,
    workloads: Workloads,
    target: Obj,
) -> bool:
    """Step 1: True when the target's rejected template was just replaced."""
    rejected = status.canary_revision
    if status.phase not in _REJECTED or rejected is None or rejected == status.stable_revision:
        return False
    if template_revision(target["spec"]["template"]) != rejected:
        return False
    stable, state = await workloads.observe(status.stable_revision)
    if stable is None or state is None or state.revision != status.stable_revision:
        return False  # no good template to give it: handed back as it is
    meta = rollout["metadata"]
    await rec.event(
        rollout,
        "Warning",
        "HandingBackStable",
        f"Deleted after revision {rejected} was rejected ({status.phase}): Deployment "
        f"{meta['namespace']}/{spec.target_ref.name} gets the template of the stable revision "
        f"{status.stable_revision} back before it runs again; change its template to roll "
        f"{rejected} out again",
    )
    await workloads.restore_template(target, stable)
    return True


async def _size(
    spec: api.RolloutSpec, status: api.RolloutStatus, workloads: Workloads, target: Obj
) -> int:
    """Step 2: the size the target is handed back at. With an autoscaler: once the target
    runs again, whatever count the user's HPA (acting again) gives it; before that, the
    count the stable copy's HPA copy had chosen."""
    current = int(target["spec"].get("replicas", 1))
    if spec.autoscaler_ref is not None:
        if current > 0:
            return current
        _, stable = await workloads.observe(status.stable_revision)
        if stable is not None and stable.replicas > 0:
            return stable.replicas
    return status.replicas or 1
