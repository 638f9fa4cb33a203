"""The reconciler's ports: what it needs from the world, as small interfaces.

The reconciler (`tidegate.reconciler`) only talks to these. The Kubernetes and Prometheus
adapters implement them for the running operator (`tidegate.adapters.wiring`); the
controller-layer tests implement them with recording fakes, so the reconcile loop can be
exercised without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tidegate import api
from tidegate.analysis import Measurement
from tidegate.engine import Selection, WebhookOutcome, WorkloadState
from tidegate.notify import Message
from tidegate.plan import Traffic
from tidegate.waves import RegionRead

Obj = dict[str, Any]
Role = Literal["stable", "canary"]
EventType = Literal["Normal", "Warning"]


class AdapterError(RuntimeError):
    """What kept a port from doing what was asked: `reason` is one CamelCase word for the
    status condition and the Event, the message says the rest."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WorkloadError(AdapterError):
    """The workloads cannot be brought to what the engine asked; the message says why."""

    def __init__(self, message: str, reason: str = "WorkloadFailed") -> None:
        super().__init__(reason, message)


class RoutingError(AdapterError):
    """The traffic cannot be routed as the engine asked; the message says why."""

    def __init__(self, message: str, reason: str = "RoutingFailed") -> None:
        super().__init__(reason, message)


# On the target Deployment: the ProgressiveRollout that rolls it out. A second rollout of
# the same Deployment is refused while the first exists.
CLAIM_ANNOTATION = "tidegate.io/claimed-by"
# On the rollout: it is handed back before it goes (unless spec.onDelete is keep).
HAND_BACK_FINALIZER = "tidegate.io/hand-back"


def role_service(service: str, role: Role) -> str:
    """The Service tidegate keeps in front of one role's pods: `<service>-stable|-canary`."""
    return f"{service}-{role}"


class Workloads(Protocol):
    """The user's target Deployment, tidegate's stable and canary copies and their Services,
    for one rollout."""

    async def target(self) -> Obj | None:
        """The user's Deployment, or None when it does not exist."""
        ...

    async def ensure_services(self, target: Obj) -> None:
        """Create the stable and canary Services when they are missing."""
        ...

    async def observe(self, revision: str | None) -> tuple[Obj | None, WorkloadState | None]:
        """The copy that runs `revision` as stored, and what the engine needs to know of it
        (None: no copy runs it). A Deployment of a copy's name that is not this rollout's
        raises WorkloadError with reason NameConflict: tidegate never writes an object it
        did not create."""
        ...

    async def copy_name(self, revision: str) -> str:
        """The name of the copy of `revision` (the one it will have, if none runs it yet)."""
        ...

    async def ensure(self, revision: str, replicas: int, target: Obj | None) -> None:
        """Make a copy run `revision` with `replicas` pods (raises WorkloadError); its
        template from the target, or from a copy that runs it (the target may be gone)."""
        ...

    async def scale(self, revision: str, replicas: int) -> None:
        """Scale the copy of `revision`, if there is one."""
        ...

    async def remove(self, revision: str, keep_template: bool) -> None:
        """Delete the copy of `revision` (its template kept first, when asked and the rollout
        keeps the release before: spec.waves.revertOnLaterFailure, revertOnUpstreamRollback)."""
        ...

    async def selection(self) -> Selection:
        """Which copy each of tidegate's Services selects."""
        ...

    async def point(self, role: Role, revision: str) -> None:
        """Make the role's Service select the copy of `revision`."""
        ...

    async def service_isolated(self, revision: str | None) -> bool:
        """Whether the user's Service (spec.service.name) selects only the pods of the copy
        of `revision` (True when there is no such Service, or it has no selector)."""
        ...

    async def isolate_service(self, revision: str) -> None:
        """Make the user's Service select only the pods of the copy of `revision`."""
        ...

    async def restore_service(self) -> bool:
        """Give the user's Service its own selector back (the copy label out); False when it
        had it already."""
        ...

    async def release_target(self, target: Obj) -> None:
        """Scale the user's Deployment to zero: the stable copy serves in its place."""
        ...

    async def claim_target(self, target: Obj) -> None:
        """Mark the target as this rollout's (CLAIM_ANNOTATION)."""
        ...

    async def restore_template(self, target: Obj, source: Obj) -> None:
        """Give the user's Deployment the pod template of `source` (a copy, as `observe`
        returned it), its copy label taken out."""
        ...

    async def restore_target(self, target: Obj, replicas: int) -> None:
        """Scale the user's Deployment back to `replicas`."""
        ...

    def target_ready(self, target: Obj, replicas: int) -> bool:
        """Whether the user's Deployment runs `replicas` ready pods of its template."""
        ...

    async def unclaim_target(self, target: Obj) -> None:
        """Remove CLAIM_ANNOTATION from the target."""
        ...

    async def hand_over(self, owner: Obj) -> None:
        """Make the rollout `owner` own the copies and tidegate's Services, so that they are
        garbage-collected once it is gone."""
        ...


class AutoscalerError(AdapterError):
    """The user's HorizontalPodAutoscaler (spec.autoscalerRef) cannot be used or copied: it
    is missing (AutoscalerNotFound), scales something other than the target (InvalidSpec), or
    a copy's name is taken (NameConflict)."""

    def __init__(self, message: str, reason: str = "AutoscalerFailed") -> None:
        super().__init__(reason, message)


class Autoscalers(Protocol):
    """The user's HorizontalPodAutoscaler of the target and tidegate's copies of it,
    `<target>-stable` and `<target>-canary`, each scaling the Deployment copy that has the
    role (it follows the copy when a promotion flips the role)."""

    async def source(self) -> Obj:
        """The user's HPA, checked to scale the target Deployment (raises AutoscalerError)."""
        ...

    async def ensure(self, role: Role, source: Obj, workload: str) -> None:
        """Make that copy hold the source's bounds, metrics and behavior, scaling the
        Deployment `workload`; nothing is written when it already does. An HPA of that
        name that is not this rollout's raises AutoscalerError with reason NameConflict."""
        ...

    async def remove(self, role: Role) -> None:
        """Delete that copy, if it exists and is this rollout's (anything else of the name
        is left alone)."""
        ...

    async def hand_over(self, owner: Obj) -> None:
        """Make the rollout `owner` own the copies, so that they go with it."""
        ...


class Router(Protocol):
    """The routes of one rollout: the live split between the stable and canary Services, and
    the header, mirror and preview routes to the canary."""

    # What it can carry: "weights", "switch", "header", "mirror", "preview". A plan that needs
    # more is an invalid spec.
    capabilities: frozenset[str]

    async def observe(self) -> Traffic | None:
        """What the routes hold now; None when they are not in a shape tidegate wrote (the
        route was just adopted, or edited by hand). Raises RoutingError."""
        ...

    async def applied(self) -> bool:
        """Whether the data plane reports the routes, as they are written now, applied (a
        Gateway API route: every parent's Accepted condition is True for its generation). A
        route that no longer exists routes nothing and counts as applied. Raises RoutingError."""
        ...

    async def apply(self, traffic: Traffic) -> bool:
        """Make the routes hold `traffic` (raises RoutingError); False when they already did."""
        ...

    async def release(self, service: str) -> bool:
        """Give the routes back to the user: everything tidegate owns in them goes, and the
        traffic goes to `service` (the user's Service) as before tidegate. False when they
        already did (then `applied` speaks of the released routes); a route that no longer
        exists has nothing to release."""
        ...


class Metrics(Protocol):
    """Runs a rollout's metric queries; every failure is a measurement with no value."""

    async def measure_all(
        self,
        address: str,
        metrics: Sequence[api.Metric],
        variables: Mapping[str, str],
        *,
        verify_tls: bool = True,
    ) -> tuple[Measurement, ...]: ...


class Webhooks(Protocol):
    """Calls a rollout's webhooks (spec.webhooks)."""

    async def call(self, webhook: api.Webhook, body: Mapping[str, object]) -> WebhookOutcome:
        """POST `body` as JSON to the webhook's URL, within its timeout. Every failure is an
        outcome with no code (and the error), never raised."""
        ...


class LoadError(AdapterError):
    """The loadtester did not take the job: it cannot be reached (LoadtesterUnreachable) or
    it refused it (LoadtesterRefused, with its status code)."""

    def __init__(self, message: str, reason: str = "LoadtesterUnreachable") -> None:
        super().__init__(reason, message)


class Secrets(Protocol):
    """Secrets in a rollout's namespace that its spec names (load.headersSecretRef)."""

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's keys and decoded values; None when it does not exist. Raises
        AdapterError when it cannot be read."""
        ...


class NoSecrets:
    """For operators wired without a Secret reader: every Secret is missing."""

    async def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return None


class LoadGenerator(Protocol):
    """The loadtester, which sends requests on the operator's behalf (spec.analysis.load)."""

    async def drive(
        self,
        loadtester: str,
        job_id: str,
        load: api.Load,
        seconds: float,
        variables: Mapping[str, str],
    ) -> None:
        """Start, or replace, the job `job_id` at the loadtester at `loadtester`: `load`'s
        requests (its URL with `variables` filled in) for `seconds` from now, after which
        it stops by itself. Raises LoadError."""
        ...


class NoLoadGenerator:
    """For operators wired without one: every job is refused."""

    async def drive(
        self,
        loadtester: str,
        job_id: str,
        load: api.Load,
        seconds: float,
        variables: Mapping[str, str],
    ) -> None:
        raise LoadError("this operator has no load generator", reason="LoadtesterUnavailable")


class TemplateError(AdapterError):
    """A metric's template cannot give it a query: it does not exist (TemplateNotFound), is
    invalid (InvalidTemplate), or the metric's arguments do not fit it (InvalidSpec)."""


class Templates(Protocol):
    """The MetricTemplates and ClusterMetricTemplates, as the watches last saw them."""

    async def get(self, kind: api.MetricTemplateKind, namespace: str, name: str) -> Obj | None:
        """The template (`namespace` is not used for a ClusterMetricTemplate); None when it
        does not exist."""
        ...


class Rollouts(Protocol):
    """The ProgressiveRollout objects themselves."""

    async def get(self, namespace: str, name: str) -> Obj | None: ...

    async def patch_status(
        self, namespace: str, name: str, patch: Obj, *, resource_version: str | None = None
    ) -> str | None:
        """A JSON merge patch of `.status` (keys set to None are removed); the rollout's
        resourceVersion after it. With `resource_version`, only while the rollout is still
        at that version: otherwise it raises AdapterError with reason Conflict, so that a
        write decided on an older version (by a replica that has since lost the Lease, or
        before a request arrived) never lands over a newer one."""
        ...

    async def remove_annotation(self, namespace: str, name: str, key: str) -> str | None:
        """Remove one annotation; the rollout's resourceVersion after it."""
        ...

    async def set_finalizer(self, rollout: Obj, finalizer: str, present: bool) -> str | None:
        """Add or remove one finalizer, leaving the others as they are; the rollout's
        resourceVersion after it (None when nothing was written)."""
        ...

    async def list_fresh(self, namespace: str) -> list[Obj]:
        """Every rollout of the namespace as the API server has it now (not the watches':
        kopf stops watching a namespace being deleted)."""
        ...


class Events(Protocol):
    """Kubernetes Events about a rollout."""

    async def post(
        self,
        rollout: Obj,
        type_: EventType,
        reason: str,
        message: str,
        timestamp: str,
        name: str | None = None,
    ) -> None:
        """Post one Event; an Event that cannot be posted is logged, never raised. With
        `name`, the Event has that name, and one of that name already posted is not posted
        again."""
        ...


class NotifierError(AdapterError):
    """A provider named in spec.notifications cannot be used: the Secret or its key is
    missing (NotificationProviderNotFound) or its value is not a provider's config
    (InvalidNotificationProvider). The message names the provider, never its URL."""

    def __init__(self, message: str, reason: str = "InvalidNotificationProvider") -> None:
        super().__init__(reason, message)


class Notifier(Protocol):
    """The notification providers of the operator's notifications Secret, and a queue that
    delivers to them in the background."""

    async def provider(self, name: str) -> api.NotificationProvider:
        """The config of the Secret's key `name` (raises NotifierError). Read from a cache:
        asking again soon costs no request."""
        ...

    def send(self, provider: str, config: api.NotificationProvider, message: Message) -> None:
        """Queue `message` for `provider`: returns at once, never raises, never waits for
        the delivery (which may fail, be retried, or be dropped when the queue is full)."""
        ...


class WorkloadsFactory(Protocol):
    def __call__(self, namespace: str, rollout: str, spec: api.RolloutSpec) -> Workloads: ...


class RouterFactory(Protocol):
    def __call__(self, namespace: str, spec: api.RolloutSpec) -> Router: ...


class AutoscalersFactory(Protocol):
    def __call__(self, namespace: str, rollout: str, spec: api.RolloutSpec) -> Autoscalers: ...


class Regions(Protocol):
    """Other clusters' rollouts of spec.waves, as their watches last saw them."""

    async def read_all(
        self, rollout: tuple[str, str], namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        """Each region's rollout by cluster. `rollout` (namespace, name) reads these regions
        from now on, and is woken when one changes; an empty `regions` releases them."""
        ...

    async def confirm_all(
        self, namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        """Each region's rollout as its API server says now (not the watch): asked before a
        release starts on what the watches said, which may not have noticed yet that a
        region went away."""
        ...

    def forget(self, rollout: tuple[str, str]) -> None:
        """The rollout is gone: it reads no region any more."""


class NoRegions:
    """For a process with no way to read other clusters: every region is unreachable."""

    async def read_all(
        self, rollout: tuple[str, str], namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        return {r.cluster: RegionRead(False, error="no region reader here") for r in regions}

    async def confirm_all(
        self, namespace: str, regions: Iterable[api.WaveRegion]
    ) -> dict[str, RegionRead]:
        return await self.read_all(("", ""), namespace, regions)

    def forget(self, rollout: tuple[str, str]) -> None:
        pass


@dataclass(frozen=True)
class Ports:
    """Everything the reconciler acts through."""

    rollouts: Rollouts
    events: Events
    metrics: Metrics
    workloads: WorkloadsFactory
    router: RouterFactory
    autoscalers: AutoscalersFactory
    webhooks: Webhooks
    notifier: Notifier
    templates: Templates
    load: LoadGenerator = field(default_factory=NoLoadGenerator)
    secrets: Secrets = field(default_factory=NoSecrets)
    regions: Regions = field(default_factory=NoRegions)
