"""kopf handlers: a task per ProgressiveRollout, woken by changes to what it watches.

The tasks are tidegate's own rather than kopf daemons: a kopf daemon puts a finalizer on
its object, and a rollout (or its whole namespace) could then not be deleted while no
operator runs. Nothing here needs one: all state is in `.status`.

Every replica watches and keeps its cache, but only the one that leads runs the tasks
(`tidegate.leadership`): a standby notes the rollouts it sees and starts a task for each of
them the moment it is elected.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from typing import Any

import kopf

from tidegate import api, metrics
from tidegate.adapters.cache import SERVICE_NAME_LABEL, Cache, Kind, Obj, trim
from tidegate.adapters.kube import REQUEST_TIMEOUT, Kube, make_api_client, user_agent
from tidegate.adapters.kube_rollouts import KubeSecrets
from tidegate.adapters.notifications import (
    DeliveryQueue,
    SecretProviders,
    WebhookNotifier,
    secret_reader,
)
from tidegate.adapters.regions import KubeRegions
from tidegate.adapters.wiring import kube_ports
from tidegate.adapters.workloads import ROLLOUT_LABEL
from tidegate.reconciler import Reconciler, backoff

# With nothing due, a rollout is still looked at this often (reads only; no writes).
IDLE_RESYNC_SECONDS = 60.0

log = logging.getLogger("tidegate.handlers")
Key = tuple[str, str]
CRD_NAME = f"{api.PLURAL}.{api.GROUP}"


class Rollouts:
    """The running reconcile loops, one per rollout, and their wake-up events.

    Loops run only while `leading`. A standby (not leading) still notes every rollout it
    sees, by its fingerprint, so that `lead()` can start them all at once.
    """

    def __init__(self, reconciler: Reconciler, *, leading: bool = True) -> None:
        self.reconciler = reconciler
        self.leading = leading
        self.wakeups: dict[Key, asyncio.Event] = {}
        self.tasks: dict[Key, asyncio.Task[None]] = {}
        self.fingerprints: dict[Key, tuple[object, ...]] = {}
        # Namespaces being deleted, and the task letting each one's rollouts go.
        self.terminating: dict[str, asyncio.Task[None] | None] = {}

    def lead(self) -> None:
        """This process has become the one that acts: a loop for every rollout known."""
        if not self.leading:
            self.leading = True
            log.info("acting on %d rollout(s) seen so far", len(self.fingerprints))
            for key in list(self.fingerprints):
                self.ensure_running(key)
            for namespace in list(self.terminating):
                self.namespace_terminating(namespace)
        metrics.LEADER.set(1)

    def wake(self, key: Key) -> None:
        if key in self.wakeups:
            self.wakeups[key].set()

    def ensure_running(self, key: Key) -> None:
        if not self.leading:
            return  # standing by: `lead()` starts it
        if key[0] in self.terminating:
            return  # its namespace is being deleted: a reconcile would put the finalizer back
        task = self.tasks.get(key)
        if task is None or task.done():
            self.wakeups[key] = asyncio.Event()
            self.tasks[key] = asyncio.create_task(self._loop(key), name=f"rollout {key}")
        else:
            self.wake(key)

    def notice(self, key: Key, fingerprint: tuple[object, ...]) -> None:
        """A rollout seen by the watch: start its loop, or wake it if what changed is worth a
        reconcile (not a status this operator wrote)."""
        changed = self.fingerprints.get(key) != fingerprint
        self.fingerprints[key] = fingerprint
        task = self.tasks.get(key)
        if task is None or task.done():
            self.ensure_running(key)
        elif changed:
            self.wake(key)

    def namespace_terminating(self, namespace: str) -> None:
        """The namespace is being deleted. kopf stops watching it as soon as the namespace
        controller says its content is gone, which can come before that controller marks
        the rollouts deleted: no event would tell of their deletion, and their loops would
        wait on a cache that no longer changes. So their loops stop, and (once leading) a
        task lets every rollout in it go, read from the API server, until none holds the
        hand-back finalizer."""
        for key in [k for k in self.fingerprints if k[0] == namespace]:
            self.forget(key)
        task = self.terminating.get(namespace)
        if self.leading and (task is None or task.done()):
            self.terminating[namespace] = asyncio.create_task(
                self._let_go(namespace), name=f"namespace {namespace} deleted"
            )
        else:
            self.terminating.setdefault(namespace, None)

    def namespace_gone(self, namespace: str) -> None:
        task = self.terminating.pop(namespace, None)
        if task is not None:
            task.cancel()

    async def _let_go(self, namespace: str) -> None:
        failures = 0
        while True:
            try:
                if await self.reconciler.let_go(namespace) == 0:
                    return
                failures += 1
            except Exception as error:  # a refused list or write: tried again, backing off
                failures += 1
                log.warning("%s: letting its rollouts go failed (%s); retrying", namespace, error)
            await asyncio.sleep(backoff(failures))

    def forget(self, key: Key) -> None:
        metrics.forget_rollout(*key)
        self.fingerprints.pop(key, None)
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.wakeups.pop(key, None)

    async def stop_all(self) -> None:
        tasks = list(self.tasks.values())
        for key in list(self.tasks):
            self.forget(key)
        for namespace, task in list(self.terminating.items()):
            if task is not None:
                task.cancel()
                tasks.append(task)
            self.terminating[namespace] = None
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
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow a cancel
            # that comes as the event is set, and a forgotten loop would then run on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_RESYNC_SECONDS if delay is None else delay):
                    await wakeup.wait()
            if self.tasks.get(key) is not asyncio.current_task():
                return  # forgotten (or replaced) meanwhile


def _key(namespace: str | None, name: str) -> Key:
    # Everything tidegate watches is namespaced: kopf's None never comes here.
    return (namespace or "", name)


def _is_our_crd(name: str, **_: Any) -> bool:
    return name == CRD_NAME


def fingerprint(body: kopf.Body) -> tuple[object, ...]:
    """What of a rollout, when it changes, is worth a reconcile: its spec (generation), its
    annotations (a promotion request) and its deletion, but not its status, which only this
    operator writes."""
    meta = body.get("metadata", {})
    annotations = json.dumps(meta.get("annotations") or {}, sort_keys=True)
    return (meta.get("generation"), annotations, meta.get("deletionTimestamp"))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    settings.posting.level = logging.WARNING  # kopf's own events: warnings and errors only
    settings.watching.server_timeout = 300
    # The indices below are live: the reconciles read what the watches last saw.
    cache = Cache({kind: kwargs[kind] for kind in CACHED})
    # The replica's identity in the user agent: the API server's audit log tells who wrote.
    memo.api_client = make_api_client(memo.kubeconfig, user_agent=user_agent(memo.identity))
    leadership = memo.leadership
    may_write = leadership.may_act if leadership is not None else None
    limit = leadership.settings.request_limit if leadership is not None else REQUEST_TIMEOUT
    kube = Kube(memo.api_client, cache, may_write=may_write, request_timeout=limit)
    # spec.notifications: providers from one Secret (read on demand, cached), delivered in
    # the background.
    secret_namespace, secret_name = memo.notifications_secret
    providers = SecretProviders(
        secret_reader(kube, secret_namespace, secret_name), f"{secret_namespace}/{secret_name}"
    )
    memo.notifier = WebhookNotifier(providers, DeliveryQueue())

    # Nothing acts before `watching` says the watches run (and, with leader election, before
    # this process is elected).
    # spec.waves: other clusters' rollouts, each followed by a watch of its own.
    memo.regions = KubeRegions(KubeSecrets(kube).read, user_agent=user_agent(memo.identity))
    reconciler = Reconciler(
        kube_ports(kube, memo.notifier, memo.regions),
        memo.prometheus_url,
        default_loadtester_url=memo.loadtester_url,
    )
    memo.rollouts = Rollouts(reconciler, leading=False)
    memo.regions.wake = memo.rollouts.wake


# kopf holds every handler but the indexing ones back until each index has had its first
# full list. The ProgressiveRollout CRD exists whenever the operator can work at all, so its
# first event here comes as soon as the cache is whole, even in a namespace with nothing in
# it: the sign for /readyz, and for a replica to start campaigning for the Lease (a replica
# elected before it could see anything would only hold a take-over up).
# (`memo.ready` is an asyncio.Event, set up by the runner: an attribute set here would be set
# on kopf's per-object copy of the memo, not on the one /readyz reads.)
@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions", when=_is_our_crd)
async def watching(memo: Any, **_: Any) -> None:
    if memo.ready.is_set():
        return
    memo.ready.set()
    log.info("the watches run and the cache is filled: ready")
    if memo.leadership is None:
        memo.rollouts.lead()  # --no-leader-election: this process alone acts
    else:
        memo.leadership.start(on_elected=memo.rollouts.lead)


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.rollouts.stop_all()
    memo.regions.close()
    await memo.notifier.queue.close()
    memo.api_client.close()


# --- the cache: a trimmed copy of every object of these kinds -------------------------------

CACHED: tuple[Kind, ...] = (
    "deployments",
    "services",
    "httproutes",
    "progressiverollouts",
    "horizontalpodautoscalers",
    "metrictemplates",
    "clustermetrictemplates",
    "endpointslices",
)


@kopf.index("apps", "v1", "deployments")
def deployments(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("deployments", body)}


@kopf.index("", "v1", "services")
def services(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("services", body)}


@kopf.index("gateway.networking.k8s.io", "v1", "httproutes")
def httproutes(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("httproutes", body)}


# Keyed by their Service: one Service has one or more.
@kopf.index("discovery.k8s.io", "v1", "endpointslices")
def endpointslices(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Obj]:
    service = labels.get(SERVICE_NAME_LABEL)
    return {_key(namespace, service): trim("endpointslices", body)} if service else {}


@kopf.index("autoscaling", "v2", "horizontalpodautoscalers")
def horizontalpodautoscalers(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("horizontalpodautoscalers", body)}


@kopf.index(api.GROUP, api.VERSION, api.TEMPLATE_PLURALS[api.MetricTemplateKind.NAMESPACED])
def metrictemplates(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("metrictemplates", body)}


# Cluster-scoped: kopf gives no namespace, and the cache keys them under "".
@kopf.index(api.GROUP, api.VERSION, api.TEMPLATE_PLURALS[api.MetricTemplateKind.CLUSTER])
def clustermetrictemplates(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, Obj]:
    return {_key(None, name): trim("clustermetrictemplates", body)}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def progressiverollouts(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, Obj]:
    return {_key(namespace, name): trim("progressiverollouts", body)}


# --- which rollouts look at which objects ----------------------------------------------------


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_deployment(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, str]:
    target = spec.get("targetRef", {}).get("name")
    if not target:
        return {}
    return {_key(namespace, d): name for d in (target, f"{target}-stable", f"{target}-canary")}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_service(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, str]:
    service = spec.get("service", {}).get("name")
    preview = (spec.get("trafficRouting", {}).get("service") or {}).get("previewService")
    names = [f"{service}-stable", f"{service}-canary", service] if service else []
    return {_key(namespace, s): name for s in [*names, preview] if s}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_route(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, str]:
    routing = spec.get("trafficRouting", {}).get("gatewayAPI") or {}
    routes = [routing.get("httpRoute"), routing.get("previewHTTPRoute")]
    return {_key(namespace, r): name for r in routes if r}


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_autoscaler(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, str]:
    """The user's HPA and the names of tidegate's copies of it (whether or not the rollout
    names an autoscaler: copies left from an earlier one are removed)."""
    target = spec.get("targetRef", {}).get("name")
    source = (spec.get("autoscalerRef") or {}).get("name")
    names = [f"{target}-stable", f"{target}-canary"] if target else []
    return {_key(namespace, a): name for a in [*names, source] if a}


TemplateKey = tuple[str, str, str]  # (kind, namespace or "" for a cluster template, name)


def template_key(kind: str, namespace: str, name: str) -> TemplateKey:
    cluster = kind == api.MetricTemplateKind.CLUSTER
    return (str(kind), "" if cluster else namespace, name)


@kopf.index(api.GROUP, api.VERSION, api.PLURAL)
def rollouts_by_template(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[TemplateKey, Key]:
    """The metric templates a rollout's metrics name (as written: the kind defaults here as
    in the API)."""
    found: dict[TemplateKey, Key] = {}
    for metric in (spec.get("analysis") or {}).get("metrics") or []:
        ref = metric.get("templateRef") if isinstance(metric, dict) else None
        if isinstance(ref, dict) and ref.get("name"):
            kind = str(ref.get("kind") or api.MetricTemplateKind.NAMESPACED)
            found[template_key(kind, namespace or "", str(ref["name"]))] = _key(namespace, name)
    return found


def _wake_users(memo: Any, index: kopf.Index[Key, str], namespace: str | None, name: str) -> None:
    for rollout in index.get(_key(namespace, name), []):
        memo.rollouts.wake(_key(namespace, rollout))


# Async handlers run in the event loop, where the wake-up events and tasks live.
@kopf.on.event("apps", "v1", "deployments")
async def deployment_changed(
    namespace: str | None, name: str, labels: kopf.Labels, memo: Any, **kwargs: Any
) -> None:
    _wake_users(memo, kwargs["rollouts_by_deployment"], namespace, name)
    # A copy (`<target>-<revision>`) names its rollout in a label.
    owner = labels.get(ROLLOUT_LABEL)
    if owner:
        memo.rollouts.wake(_key(namespace, owner))


@kopf.on.event("", "v1", "services")
async def service_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    _wake_users(memo, kwargs["rollouts_by_service"], namespace, name)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices")
async def endpoints_changed(
    namespace: str | None, labels: kopf.Labels, memo: Any, **kwargs: Any
) -> None:
    # The Service router's change reached the endpoints (or a pod became ready or went).
    service = labels.get(SERVICE_NAME_LABEL)
    if service:
        _wake_users(memo, kwargs["rollouts_by_service"], namespace, service)


@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes")
async def route_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    # A route edited by hand (or by a GitOps sync) is put back at once.
    _wake_users(memo, kwargs["rollouts_by_route"], namespace, name)


@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers")
async def autoscaler_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    # The user's HPA changed (its copies follow), or a copy was edited or deleted.
    _wake_users(memo, kwargs["rollouts_by_autoscaler"], namespace, name)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def rollout_changed(
    type: str | None, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    if type == "DELETED":
        memo.rollouts.forget(_key(namespace, name))
    else:
        memo.rollouts.notice(_key(namespace, name), fingerprint(body))


@kopf.on.event("", "v1", "namespaces")
async def namespace_changed(
    type: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    """A watched namespace being deleted: its rollouts are let go
    (Rollouts.namespace_terminating)."""
    rollouts: Rollouts | None = getattr(memo, "rollouts", None)
    if rollouts is None or not watched_namespace(memo, name):
        return
    if type == "DELETED":
        rollouts.namespace_gone(name)
    elif body.get("metadata", {}).get("deletionTimestamp"):
        rollouts.namespace_terminating(name)


def watched_namespace(memo: Any, name: str) -> bool:
    """Whether the operator serves rollouts in namespace `name` (-n patterns, or all)."""
    patterns: list[str] = list(getattr(memo, "namespaces", None) or [])
    return not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)


# A template created, changed or deleted: the rollouts whose metrics name it reconcile now
# (one waiting for a missing template goes on at once; a changed query is what the next
# measurement runs, as each measurement reads the template again).
def _wake_template_users(memo: Any, index: kopf.Index[TemplateKey, Key], key: TemplateKey) -> None:
    for rollout in index.get(key, []):
        memo.rollouts.wake(rollout)


@kopf.on.event(api.GROUP, api.VERSION, api.TEMPLATE_PLURALS[api.MetricTemplateKind.NAMESPACED])
async def template_changed(namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    key = template_key(api.MetricTemplateKind.NAMESPACED, namespace or "", name)
    _wake_template_users(memo, kwargs["rollouts_by_template"], key)


@kopf.on.event(api.GROUP, api.VERSION, api.TEMPLATE_PLURALS[api.MetricTemplateKind.CLUSTER])
async def cluster_template_changed(name: str, memo: Any, **kwargs: Any) -> None:
    key = template_key(api.MetricTemplateKind.CLUSTER, "", name)
    _wake_template_users(memo, kwargs["rollouts_by_template"], key)
