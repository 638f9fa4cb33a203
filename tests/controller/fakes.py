"""Recording fakes of the reconciler's ports (`tidegate.ports`), sharing one world.

`World` holds what the cluster and Prometheus would: the rollout object, the user's
Deployment, tidegate's copies, the user's HPA and tidegate's copies of it, the route's canary
weight and the next measurements. Every
call on a port is appended to `World.calls` in order, so a test can check what was done and
in which order. A port can be told to fail (`fail`) or to stop the process (`kill_when`),
as a crashed operator would, at any call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tidegate import api
from tidegate.adapters.kube import KubeError
from tidegate.adapters.notifications import parse_provider
from tidegate.analysis import Measurement
from tidegate.engine import Selection, WebhookOutcome, WorkloadState
from tidegate.notify import Message
from tidegate.plan import STABLE_ONLY, Traffic
from tidegate.ports import (
    CLAIM_ANNOTATION,
    AdapterError,
    AutoscalerError,
    EventType,
    NotifierError,
    Obj,
    Ports,
    Role,
    RoutingError,
    WorkloadError,
)
from tidegate.revisions import template_revision
from tidegate.waves import RegionRead

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "canary" / "rollout.yaml"
NAMESPACE = "shop-ns"
NAME = "shop"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

Call = tuple[Any, ...]


class Killed(BaseException):
    """The operator process died here (not an Exception: nothing may catch it)."""


def example_spec(**changes: Any) -> Obj:
    """The canary example's spec, with top-level fields replaced."""
    spec: Obj = yaml.safe_load(EXAMPLE.read_text())["spec"]
    return {**spec, **changes}


def merge_patch(target: Obj, patch: Mapping[str, Any]) -> Obj:
    """RFC 7386, as the API server applies a merge patch."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


@dataclass
class Copy:
    """A Deployment copy of one revision as the fake cluster holds it."""

    revision: str
    replicas: int
    template: Obj
    ready: bool


@dataclass
class AutoscalerCopy:
    """An HPA of a copy's name as the fake cluster holds it."""

    rollout: str | None  # the rollout that made it; None: someone else's
    scales: str  # the Deployment its scaleTargetRef names
    spec: Obj  # minReplicas, maxReplicas, metrics, behavior
    owned_by: str | None = None  # the rollout uid it was handed over to


@dataclass
class World:
    clock_start: datetime = EPOCH
    rollout: Obj | None = None
    # Other ProgressiveRollouts in the namespace, by name.
    others: dict[str, Obj] = field(default_factory=dict)
    target: Obj | None = None
    # The copies, by revision; which one each of tidegate's Services selects.
    by_revision: dict[str, Copy] = field(default_factory=dict)
    selects: dict[Role, str | None] = field(
        default_factory=lambda: {"stable": None, "canary": None}
    )
    services: set[Role] = field(default_factory=set)
    route_exists: bool = True
    # The user's HorizontalPodAutoscaler (spec.autoscalerRef), and HPAs of the copies' names.
    autoscaler: Obj | None = None
    autoscaler_copies: dict[Role, AutoscalerCopy] = field(default_factory=dict)
    # The user's Deployment is ready at its replicas (after it was scaled back).
    target_ready: bool = True
    # The rollout uid the copies and Services were handed over to (owner references).
    owned_by: str | None = None
    # What the routes hold; None: still as the user wrote them (not in tidegate's shape).
    route: Traffic | None = None
    # Whether the gateway reports the routes, as written now, applied.
    route_applied: bool = True
    # The revision whose copy the user's Service was narrowed to (None: as the user wrote it).
    service_on: str | None = None
    # Whether the routes were released to the user's Service (a hand-back).
    route_released: bool = False
    # How many times a watched object changed (each would wake the rollout), and how many
    # had when the rollout last waited.
    changes: int = 0
    changes_waited: int = 0
    # The names of the Events posted with one.
    event_names: set[str] = field(default_factory=set)
    # Called right after a rollout is read: what someone else does meanwhile.
    after_get: Callable[[], None] | None = None
    # What the router can carry.
    capabilities: frozenset[str] = frozenset({"weights", "switch", "header", "mirror", "preview"})
    # Copies become ready as soon as they are written (a cluster that rolls instantly).
    ready_on_write: bool = True
    # The value every metric query returns from now on; None: no data.
    metric_value: float | None = 0.0
    # What each webhook (by name) answers: a status code, or None for no answer; 200 unless
    # named.
    webhook_answers: dict[str, int | None] = field(default_factory=dict)
    # The notifications Secret: provider name -> its value (YAML); None: no Secret.
    notification_providers: dict[str, str] | None = field(default_factory=dict)
    # Secrets by (namespace, name); a value of None: reading it is refused (403).
    secrets: dict[tuple[str, str], dict[str, str] | None] = field(default_factory=dict)
    load_headers: list[dict[str, str]] = field(default_factory=list)  # of each job sent
    # What the notifier was asked to deliver: (provider, its config's url, message).
    notifications: list[tuple[str, str, Message]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    # Port method name -> the exception it raises (until removed).
    fail: dict[str, Exception] = field(default_factory=dict)
    # Port method name -> the process dies at a call of it with arguments that match.
    kill_when: dict[str, Callable[..., bool]] = field(default_factory=dict)
    now: datetime = EPOCH
    # Called after each write to a watched object (not the rollout's status), as the watch
    # events of the real cluster wake the rollout.
    listeners: list[Callable[[], None]] = field(default_factory=list)
    # MetricTemplates ((namespace, name)) and ClusterMetricTemplates (("", name)), as stored.
    templates: dict[tuple[api.MetricTemplateKind, str, str], Obj] = field(default_factory=dict)
    # Other regions' rollouts (spec.waves) by cluster, as their watches would report them.
    regions: dict[str, RegionRead] = field(default_factory=dict)
    # What a fresh read of a region says, where it differs from its watch (`regions`).
    regions_now: dict[str, RegionRead] = field(default_factory=dict)
    # The rollouts that were told to read no region any more (gone).
    regions_forgotten: list[tuple[str, str]] = field(default_factory=list)
    # What each measure_all was asked: metric name -> (query, thresholdRange).
    queries: list[dict[str, tuple[str | None, api.ThresholdRange | None]]] = field(
        default_factory=list
    )

    # --- set-up -------------------------------------------------------------------------

    def add_rollout(
        self, spec: Obj | None = None, status: Obj | None = None, name: str = NAME
    ) -> None:
        rollout = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {
                "name": name,
                "namespace": NAMESPACE,
                "uid": "uid-1",
                "generation": 1,
                "resourceVersion": "1",
                "annotations": {},
                "finalizers": [],
            },
            "spec": spec if spec is not None else example_spec(),
            "status": status or {},
        }
        if name == NAME:
            self.rollout = rollout
        else:
            self.others[name] = rollout

    def named(self, name: str) -> Obj | None:
        return self.rollout if name == NAME else self.others.get(name)

    def add_target(self, version: str = "1.0.0", replicas: int = 3) -> None:
        self.target = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "shop",
                "namespace": NAMESPACE,
                "resourceVersion": "1",
                "annotations": {},
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "shop"}},
                "template": {
                    "metadata": {"labels": {"app": "shop"}},
                    "spec": {
                        "containers": [
                            {"name": "shop", "env": [{"name": "VERSION", "value": version}]}
                        ]
                    },
                },
            },
        }

    def add_autoscaler(
        self, min_replicas: int = 2, max_replicas: int = 6, scales: str = "shop"
    ) -> None:
        """The user's HPA `shop`, scaling Deployment `scales`."""
        self.autoscaler = {
            "metadata": {"name": "shop", "namespace": NAMESPACE},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": scales},
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}],
            },
        }

    def add_template(
        self,
        name: str,
        query: str,
        args: list[Obj] | None = None,
        threshold_range: Obj | None = None,
        kind: api.MetricTemplateKind = api.MetricTemplateKind.NAMESPACED,
    ) -> None:
        """A MetricTemplate in the rollout's namespace, or a ClusterMetricTemplate."""
        cluster = kind is api.MetricTemplateKind.CLUSTER
        spec: Obj = {"query": query, "args": args or []}
        if threshold_range is not None:
            spec["thresholdRange"] = threshold_range
        metadata = {"name": name} if cluster else {"name": name, "namespace": NAMESPACE}
        self.templates[(kind, "" if cluster else NAMESPACE, name)] = {
            "apiVersion": api.API_VERSION,
            "kind": kind.value,
            "metadata": metadata,
            "spec": spec,
        }

    def set_version(self, version: str) -> None:
        assert self.target is not None
        self.target["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "VERSION", "value": version}
        ]

    @property
    def copies(self) -> dict[Role, Copy]:
        """The copies that have a role, as the rollout's status names them, by role."""
        status = (self.rollout or {}).get("status") or {}
        found: dict[Role, Copy] = {}
        for role, key in (("stable", "stableRevision"), ("canary", "canaryRevision")):
            revision = status.get(key)
            if revision in self.by_revision:
                found[role] = self.by_revision[revision]
        return found

    def role_of(self, revision: str) -> str:
        """What the rollout's status says the revision is for ("other": neither role)."""
        status = (self.rollout or {}).get("status") or {}
        if status.get("stableRevision") == revision:
            return "stable"
        return "canary" if status.get("canaryRevision") == revision else "other"

    def revision_of(self, version: str) -> str:
        assert self.target is not None
        template = copy.deepcopy(self.target["spec"]["template"])
        template["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": version}]
        return template_revision(template)

    @property
    def canary_weight(self) -> int:
        return 0 if self.route is None else self.route.canary_weight

    @canary_weight.setter
    def canary_weight(self, weight: int) -> None:
        """A hand edit of the live split."""
        self.route = replace(self.route or STABLE_ONLY, canary_weight=weight)

    @property
    def status(self) -> Obj:
        assert self.rollout is not None
        status: Obj = self.rollout.get("status") or {}
        return status

    def condition(self, type_: str) -> Obj | None:
        return next((c for c in self.status.get("conditions", []) if c["type"] == type_), None)

    def names(self) -> list[str]:
        """The port methods called, in order."""
        return [call[0] for call in self.calls]

    def clock(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    # --- every port call goes through here ----------------------------------------------

    def record(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        if method in self.fail:
            raise self.fail[method]
        if method in self.kill_when and self.kill_when[method](*args):
            raise Killed(method)

    def wait(self, delay: float | None) -> None:
        """Between two passes: none when a watched object changed since the last wait (its
        watch event wakes the rollout at once), else the pass's timer (60 s when it asked
        for none)."""
        if self.changes != self.changes_waited:
            self.changes_waited = self.changes
            return
        self.advance(delay if delay is not None else 60)

    def changed(self) -> None:
        """A watched object changed: what its watch event would do."""
        self.changes += 1
        for listener in self.listeners:
            listener()

    def ports(self) -> Ports:
        return Ports(
            rollouts=FakeRollouts(self),
            events=FakeEvents(self),
            metrics=FakeMetrics(self),
            workloads=lambda namespace, rollout, spec: FakeWorkloads(self, rollout, spec),
            router=lambda namespace, spec: FakeRouter(self),
            autoscalers=lambda namespace, rollout, spec: FakeAutoscalers(self, rollout, spec),
            webhooks=FakeWebhooks(self),
            load=FakeLoad(self),
            notifier=FakeNotifier(self),
            templates=FakeTemplates(self),
            regions=FakeRegions(self),
            secrets=FakeSecrets(self),
        )

    def events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of every Event posted."""
        return [(c[1], c[2], c[3]) for c in self.calls if c[0] == "post_event"]


class FakeNotifier:
    """Providers from `World.notification_providers`; what is sent is recorded, not sent."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def provider(self, name: str) -> api.NotificationProvider:
        self.world.record("notification_provider", name)
        providers = self.world.notification_providers
        if providers is None or name not in providers:
            raise NotifierError(f"no provider {name!r}", reason="NotificationProviderNotFound")
        return parse_provider("ops/tidegate-notifications", name, providers[name])

    def send(self, provider: str, config: api.NotificationProvider, message: Message) -> None:
        self.world.notifications.append((provider, config.url, message))


def bump_version(rollout: Obj) -> str:
    """A write stored: the rollout's resourceVersion moves on, as the API server's does."""
    meta = rollout["metadata"]
    meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)
    return str(meta["resourceVersion"])


class FakeRollouts:
    """Each write moves the rollout's resourceVersion on; a status write conditional on an
    older one fails with a Conflict, as the API server's precondition does."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def get(self, namespace: str, name: str) -> Obj | None:
        self.world.record("get_rollout", namespace, name)
        found = copy.deepcopy(self.world.named(name))
        if self.world.after_get is not None:
            self.world.after_get()
        return found

    async def patch_status(
        self, namespace: str, name: str, patch: Obj, *, resource_version: str | None = None
    ) -> str | None:
        self.world.record("patch_status", patch)
        rollout = self.world.named(name)
        assert rollout is not None
        current = rollout["metadata"].get("resourceVersion")
        if resource_version is not None and resource_version != current:
            raise AdapterError(
                "Conflict",
                f"patch progressiverollouts/status {namespace}/{name}: the object has been "
                f"modified (at {current}, not {resource_version})",
            )
        rollout["status"] = merge_patch(rollout.get("status") or {}, patch)
        return bump_version(rollout)

    async def set_finalizer(self, rollout: Obj, finalizer: str, present: bool) -> str | None:
        self.world.record("set_finalizer", finalizer, present)
        stored = self.world.named(rollout["metadata"]["name"])
        assert stored is not None
        finalizers = [f for f in stored["metadata"].get("finalizers", []) if f != finalizer]
        stored["metadata"]["finalizers"] = finalizers + ([finalizer] if present else [])
        return bump_version(stored)

    async def list_fresh(self, namespace: str) -> list[Obj]:
        self.world.record("list_rollouts", namespace)
        found = [self.world.rollout, *self.world.others.values()]
        return [copy.deepcopy(r) for r in found if r is not None]

    async def remove_annotation(self, namespace: str, name: str, key: str) -> str | None:
        self.world.record("remove_annotation", key)
        rollout = self.world.named(name)
        assert rollout is not None
        rollout["metadata"]["annotations"].pop(key, None)
        return bump_version(rollout)


class FakeEvents:
    def __init__(self, world: World) -> None:
        self.world = world

    async def post(
        self,
        rollout: Obj,
        type_: EventType,
        reason: str,
        message: str,
        timestamp: str,
        name: str | None = None,
    ) -> None:
        if name is not None:
            if name in self.world.event_names:
                return  # the API server refuses a second Event of the same name
            self.world.event_names.add(name)
        self.world.record("post_event", type_, reason, message)


class FakeTemplates:
    def __init__(self, world: World) -> None:
        self.world = world

    async def get(self, kind: api.MetricTemplateKind, namespace: str, name: str) -> Obj | None:
        self.world.record("get_template", kind.value, namespace, name)
        cluster = kind is api.MetricTemplateKind.CLUSTER
        return copy.deepcopy(self.world.templates.get((kind, "" if cluster else namespace, name)))


class FakeRegions:
    """Regions from `World.regions` (unreachable when not there); who reads which is recorded."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def read_all(
        self, rollout: tuple[str, str], namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        clusters = [r.cluster for r in regions]
        if clusters:
            self.world.record("read_regions", rollout, tuple(clusters))
        return {
            c: self.world.regions.get(c, RegionRead(False, error="not in this world"))
            for c in clusters
        }

    async def confirm_all(
        self, namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        clusters = [r.cluster for r in regions]
        self.world.record("confirm_regions", tuple(clusters))
        fresh = {**self.world.regions, **self.world.regions_now}
        return {c: fresh.get(c, RegionRead(False, error="not in this world")) for c in clusters}

    def forget(self, rollout: tuple[str, str]) -> None:
        self.world.regions_forgotten.append(rollout)


class FakeMetrics:
    def __init__(self, world: World) -> None:
        self.world = world

    async def measure_all(
        self,
        address: str,
        metrics: Sequence[api.Metric],
        variables: Mapping[str, str],
        *,
        verify_tls: bool = True,
    ) -> tuple[Measurement, ...]:
        self.world.record("measure_all", address, dict(variables), verify_tls)
        self.world.queries.append({m.name: (m.query, m.threshold_range) for m in metrics})
        return tuple(Measurement(m.name, self.world.metric_value) for m in metrics)


class FakeWebhooks:
    def __init__(self, world: World) -> None:
        self.world = world

    async def call(self, webhook: api.Webhook, body: Mapping[str, object]) -> WebhookOutcome:
        self.world.record("call_webhook", webhook.name, dict(body))
        code = self.world.webhook_answers.get(webhook.name, 200)
        if code is None:
            return WebhookOutcome(webhook.name, None, error="no answer within 10s")
        return WebhookOutcome(webhook.name, code)


class FakeLoad:
    """The loadtester: records each job handed to it (`drive`), its URL rendered."""

    def __init__(self, world: World) -> None:
        self.world = world

    async def drive(
        self,
        loadtester: str,
        job_id: str,
        load: api.Load,
        seconds: float,
        variables: Mapping[str, str],
    ) -> None:
        url = load.url
        for name, value in variables.items():
            url = url.replace(f"{{{{ {name} }}}}", value)
        self.world.record("drive_load", loadtester, job_id, url, load.rate, seconds)
        self.world.load_headers.append(dict(load.headers))


class FakeSecrets:
    def __init__(self, world: World) -> None:
        self.world = world

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.world.record("read_secret", namespace, name)
        key = (namespace, name)
        if key in self.world.secrets and self.world.secrets[key] is None:
            raise KubeError(403, "get", f"secrets {namespace}/{name}", "forbidden: no, you may not")
        return self.world.secrets.get(key)


class FakeWorkloads:
    def __init__(self, world: World, rollout: str, spec: api.RolloutSpec) -> None:
        self.world = world
        self.rollout = rollout
        self.spec = spec

    async def target(self) -> Obj | None:
        self.world.record("target")
        return copy.deepcopy(self.world.target)

    async def ensure_services(self, target: Obj) -> None:
        self.world.record("ensure_services")
        if self.world.services != {"stable", "canary"}:
            self.world.services |= {"stable", "canary"}
            self.world.changed()

    async def observe(self, revision: str | None) -> tuple[Obj | None, WorkloadState | None]:
        self.world.record("observe", revision)
        found = self.world.by_revision.get(revision) if revision else None
        if found is None:
            return None, None
        state = WorkloadState(found.revision, found.replicas, found.ready)
        return {"spec": {"template": copy.deepcopy(found.template)}}, state

    async def copy_name(self, revision: str) -> str:
        return f"shop-{revision}"

    async def ensure(self, revision: str, replicas: int, target: Obj | None) -> None:
        self.world.record("ensure", self.world.role_of(revision), revision, replicas)
        existing = self.world.by_revision.get(revision)
        if existing is not None:
            if existing.replicas != replicas:
                existing.replicas = replicas
                existing.ready = self.world.ready_on_write
                self.world.changed()
            return
        template = target["spec"]["template"] if target is not None else None
        if template is None or template_revision(template) != revision:
            raise WorkloadError(f"no template of revision {revision} is left")
        self.world.by_revision[revision] = Copy(
            revision, replicas, copy.deepcopy(template), self.world.ready_on_write
        )
        self.world.changed()

    async def scale(self, revision: str, replicas: int) -> None:
        self.world.record("scale", self.world.role_of(revision), replicas)
        found = self.world.by_revision.get(revision)
        if found is not None and found.replicas != replicas:
            found.replicas = replicas
            self.world.changed()

    async def remove(self, revision: str, keep_template: bool) -> None:
        self.world.record("remove", revision, keep_template)
        assert revision not in self.world.selects.values(), "a copy in use removed"
        if self.world.by_revision.pop(revision, None) is not None:
            self.world.changed()

    async def selection(self) -> Selection:
        return Selection(stable=self.world.selects["stable"], canary=self.world.selects["canary"])

    async def point(self, role: Role, revision: str) -> None:
        self.world.record("point", role, revision)
        if self.world.selects[role] != revision:
            self.world.selects[role] = revision
            self.world.changed()

    async def claim_target(self, target: Obj) -> None:
        self.world.record("claim_target", self.rollout)
        assert self.world.target is not None
        self.world.target["metadata"]["annotations"][CLAIM_ANNOTATION] = self.rollout
        self.world.changed()

    async def restore_template(self, target: Obj, source: Obj) -> None:
        self.world.record("restore_template")
        assert self.world.target is not None
        self.world.target["spec"]["template"] = copy.deepcopy(source["spec"]["template"])
        self.world.changed()

    async def restore_target(self, target: Obj, replicas: int) -> None:
        self.world.record("restore_target", replicas)
        assert self.world.target is not None
        self.world.target["spec"]["replicas"] = replicas
        self.world.target_ready = self.world.ready_on_write
        self.world.changed()

    def target_ready(self, target: Obj, replicas: int) -> bool:
        return self.world.target_ready and int(target["spec"].get("replicas", 1)) == replicas

    async def unclaim_target(self, target: Obj) -> None:
        self.world.record("unclaim_target")
        assert self.world.target is not None
        self.world.target["metadata"]["annotations"].pop(CLAIM_ANNOTATION, None)

    async def hand_over(self, owner: Obj) -> None:
        self.world.record("hand_over", owner["metadata"]["uid"])
        self.world.owned_by = owner["metadata"]["uid"]

    async def service_isolated(self, revision: str | None) -> bool:
        return revision is not None and self.world.service_on == revision

    async def isolate_service(self, revision: str) -> None:
        self.world.record("isolate_service", revision)
        if self.world.service_on != revision:
            self.world.service_on = revision
            self.world.changed()

    async def restore_service(self) -> bool:
        self.world.record("restore_service")
        changed = self.world.service_on is not None
        self.world.service_on = None
        return changed

    async def release_target(self, target: Obj) -> None:
        self.world.record("release_target")
        assert self.world.target is not None
        self.world.target["spec"]["replicas"] = 0
        self.world.changed()


class FakeRouter:
    def __init__(self, world: World) -> None:
        self.world = world
        self.capabilities = world.capabilities

    async def observe(self) -> Traffic | None:
        self.world.record("observe_route")
        if not self.world.route_exists:
            raise RoutingError(f"HTTPRoute {NAMESPACE}/shop does not exist")
        return self.world.route

    async def applied(self) -> bool:
        if not self.world.route_exists:
            return True  # routes nothing (as the adapters have it)
        return self.world.route_applied

    async def release(self, service: str) -> bool:
        self.world.record("release_route", service)
        if not self.world.route_exists:
            return False  # nothing of tidegate's left in it
        changed = self.world.route is not None or not self.world.route_released
        self.world.route = None  # as the user wrote it: to their own Service
        self.world.route_released = True
        return changed

    async def apply(self, traffic: Traffic) -> bool:
        self.world.record("set_traffic", traffic)
        if not self.world.route_exists:
            raise RoutingError(f"HTTPRoute {NAMESPACE}/shop does not exist")
        changed = self.world.route != traffic
        self.world.route = traffic
        if changed:
            self.world.changed()
        return changed


class FakeAutoscalers:
    """As `tidegate.adapters.autoscalers`: copies written only when they differ, a name that
    is someone else's never written nor deleted. Writes are recorded as `write_autoscaler`
    and `delete_autoscaler`."""

    COPIED = ("minReplicas", "maxReplicas", "metrics", "behavior")

    def __init__(self, world: World, rollout: str, spec: api.RolloutSpec) -> None:
        self.world = world
        self.rollout = rollout
        self.target = spec.target_ref.name
        self.source_name = spec.autoscaler_ref.name if spec.autoscaler_ref else None

    async def source(self) -> Obj:
        self.world.record("autoscaler_source")
        found = self.world.autoscaler
        if found is None:
            raise AutoscalerError(
                f"HorizontalPodAutoscaler {NAMESPACE}/{self.source_name} does not exist",
                reason="AutoscalerNotFound",
            )
        scales = found["spec"]["scaleTargetRef"]["name"]
        if scales != self.target:
            raise AutoscalerError(
                f"invalid spec: spec.autoscalerRef: it scales {scales}", reason="InvalidSpec"
            )
        return copy.deepcopy(found)

    def _ours(self, role: Role) -> AutoscalerCopy | None:
        found = self.world.autoscaler_copies.get(role)
        if found is not None and found.rollout != self.rollout:
            raise AutoscalerError(f"HorizontalPodAutoscaler shop-{role} exists", "NameConflict")
        return found

    async def ensure(self, role: Role, source: Obj, workload: str) -> None:
        self.world.record("ensure_autoscaler", role)
        existing = self._ours(role)
        spec = {k: copy.deepcopy(source["spec"][k]) for k in self.COPIED if k in source["spec"]}
        wanted = AutoscalerCopy(self.rollout, workload, spec)
        if existing is not None and (existing.scales, existing.spec) == (wanted.scales, spec):
            return
        self.world.record("write_autoscaler", role, spec)
        self.world.autoscaler_copies[role] = wanted
        self.world.changed()

    async def remove(self, role: Role) -> None:
        self.world.record("remove_autoscaler", role)
        found = self.world.autoscaler_copies.get(role)
        if found is None or found.rollout != self.rollout:
            return
        self.world.record("delete_autoscaler", role)
        del self.world.autoscaler_copies[role]
        self.world.changed()

    async def hand_over(self, owner: Obj) -> None:
        self.world.record("hand_over_autoscalers", owner["metadata"]["uid"])
        for found in self.world.autoscaler_copies.values():
            if found.rollout == self.rollout:
                found.owned_by = owner["metadata"]["uid"]
