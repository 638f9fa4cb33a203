"""kopf handlers: one daemon per ProgressiveRollout, woken by changes to what it watches."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from tidegate import api
from tidegate.adapters.kube import make_client
from tidegate.reconciler import Reconciler

# With nothing due, a rollout is still looked at this often (reads only; no writes).
IDLE_RESYNC_SECONDS = 60.0
ERROR_RETRY_SECONDS = 2.0


def _wakeup(memo: Any, namespace: str | None, name: str) -> asyncio.Event:
    # Rollouts and Deployments are namespaced: kopf's "None" never comes here.
    events: dict[tuple[str, str], asyncio.Event] = memo.wakeups
    return events.setdefault((namespace or "", name), asyncio.Event())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.finalizer = f"{api.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
    settings.posting.level = 30  # kopf's own events: warnings and errors only
    settings.watching.server_timeout = 300
    memo.client = make_client(memo.kubeconfig)
    memo.reconciler = Reconciler(memo.client, memo.prometheus_url)
    memo.wakeups = {}
    memo.ready = True


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.client.close()


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_deployment(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], str]:
    target = spec.get("targetRef", {}).get("name")
    if not target:
        return {}
    return {(namespace or "", d): name for d in (target, f"{target}-stable", f"{target}-canary")}


@kopf.on.event("apps", "v1", "deployments")
def deployment_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    index: kopf.Index[tuple[str, str], str] = kwargs["rollouts_by_deployment"]
    for rollout in index.get((namespace or "", name), []):
        _wakeup(memo, namespace, rollout).set()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
def rollout_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _wakeup(memo, namespace, name).set()


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=1.0)
async def run_rollout(
    namespace: str | None,
    name: str,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    wakeup = _wakeup(memo, namespace, name)
    reconciler: Reconciler = memo.reconciler
    while not stopped:
        wakeup.clear()
        try:
            delay = await reconciler.reconcile(namespace or "", name)
        except Exception as error:
            logger.exception(f"reconcile failed: {error}")
            delay = ERROR_RETRY_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup.wait(), IDLE_RESYNC_SECONDS if delay is None else delay)
    memo.wakeups.pop((namespace, name), None)
