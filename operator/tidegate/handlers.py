"""kopf handlers: a task per ProgressiveRollout, woken by changes to what it watches.

The tasks are tidegate's own rather than kopf daemons: a kopf daemon puts a finalizer on
its object, and a rollout (or its whole namespace) could then not be deleted while no
operator runs. Nothing here needs one: all state is in `.status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from tidegate import api, metrics
from tidegate.adapters.kube import Kube, make_api_client
from tidegate.adapters.wiring import kube_ports
from tidegate.reconciler import Reconciler, backoff

# With nothing due, a rollout is still looked at this often (reads only; no writes).
IDLE_RESYNC_SECONDS = 60.0

log = logging.getLogger("tidegate.handlers")
Key = tuple[str, str]


class Rollouts:
    """The running reconcile loops, one per rollout, and their wake-up events."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.wakeups: dict[Key, asyncio.Event] = {}
        self.tasks: dict[Key, asyncio.Task[None]] = {}

    def wake(self, key: Key) -> None:
        if key in self.wakeups:
            self.wakeups[key].set()

    def ensure_running(self, key: Key) -> None:
        task = self.tasks.get(key)
        if task is None or task.done():
            self.wakeups[key] = asyncio.Event()
            self.tasks[key] = asyncio.create_task(self._loop(key), name=f"rollout {key}")
        else:
            self.wake(key)

    def forget(self, key: Key) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.wakeups.pop(key, None)

    async def stop_all(self) -> None:
        tasks = list(self.tasks.values())
        for key in list(self.tasks):
            self.forget(key)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, key: Key) -> None:
        namespace, name = key
        wakeup = self.wakeups[key]
        failures, last_error = 0, ""
        while True:
            wakeup.clear()
            try:
                delay = await self.reconciler.reconcile(namespace, name)
                metrics.RECONCILES.labels("ok").inc()
                failures, last_error = 0, ""
            except Exception as error:
                # What the reconciler could not even report on the rollout (it could not read
                # it, or a bug): the traceback once, then a line per retry, backing off.
                failures += 1
                metrics.RECONCILES.labels("error").inc()
                text = f"{type(error).__name__}: {error}"
                if text != last_error:
                    log.exception("%s/%s: reconcile failed; retrying", namespace, name)
                else:
                    log.warning("%s/%s: reconcile failed again (%s)", namespace, name, text)
                last_error = text
                delay = backoff(failures)
            with contextlib.suppress(TimeoutError):
                timeout = IDLE_RESYNC_SECONDS if delay is None else delay
                await asyncio.wait_for(wakeup.wait(), timeout)


def _key(namespace: str | None, name: str) -> Key:
    # Rollouts and Deployments are namespaced: kopf's None never comes here.
    return (namespace or "", name)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # kopf's own events: warnings and errors only
    settings.watching.server_timeout = 300
    memo.api_client = make_api_client(memo.kubeconfig)
    memo.rollouts = Rollouts(Reconciler(kube_ports(Kube(memo.api_client)), memo.prometheus_url))
    memo.ready = True


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.rollouts.stop_all()
    memo.api_client.close()


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_deployment(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, str]:
    target = spec.get("targetRef", {}).get("name")
    if not target:
        return {}
    return {_key(namespace, d): name for d in (target, f"{target}-stable", f"{target}-canary")}


# Async handlers run in the event loop, where the wake-up events and tasks live.
@kopf.on.event("apps", "v1", "deployments")
async def deployment_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    index: kopf.Index[Key, str] = kwargs["rollouts_by_deployment"]
    for rollout in index.get(_key(namespace, name), []):
        memo.rollouts.wake(_key(namespace, rollout))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def rollout_changed(
    type: str | None, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if type == "DELETED":
        memo.rollouts.forget(_key(namespace, name))
    else:
        memo.rollouts.ensure_running(_key(namespace, name))
