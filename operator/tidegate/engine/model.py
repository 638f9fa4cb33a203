"""What the engine sees and what it decides: the observation it is given, the actions it
asks for (in the order they must be done), its decision, and the small rules about
traffic and copies that its stages share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from tidegate.analysis import Measurement
from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    UNDO_ANNOTATION,
    HeaderRouteMatch,
    RolloutPhase,
    RolloutStatus,
    StringMatch,
    WebhookType,
)
from tidegate.plan import (
    HeaderMatch,
    Plan,
    PlanStep,
    Traffic,
)
from tidegate.waves import RegionRead

Role = Literal["stable", "canary"]

REQUEST_NAMES = {
    PROMOTE_ANNOTATION: "promote",
    PROMOTE_FULL_ANNOTATION: "promote --full",
    ABORT_ANNOTATION: "abort",
    RETRY_ANNOTATION: "retry",
    UNDO_ANNOTATION: "undo",
}

# The Event of a release the regions before this one let start (the reconciler confirms
# those regions before it acts on it).
WAVE_READY_EVENT = "WaveReady"

# The shortest requeue: for "right away" (a newer revision waiting after a promotion).
SOON_SECONDS = 0.1

STEADY_PHASES = frozenset(
    {
        RolloutPhase.INITIALIZED,
        RolloutPhase.SUCCEEDED,
        RolloutPhase.FAILED,
        RolloutPhase.ABORTED,
        RolloutPhase.CANCELLED,
    }
)
# Ended by a rollback: the canary's revision is not tried again unless asked (retry).
ROLLED_BACK_PHASES = frozenset({RolloutPhase.FAILED, RolloutPhase.ABORTED})
READY_PHASES = frozenset({RolloutPhase.INITIALIZED, RolloutPhase.SUCCEEDED, RolloutPhase.CANCELLED})
PROGRESSING_PHASES = frozenset(
    {
        RolloutPhase.INITIALIZING,
        RolloutPhase.PROGRESSING,
        RolloutPhase.PAUSED,
        RolloutPhase.PROMOTING,
        RolloutPhase.WAITING_FOR_WAVE,
    }
)


# --- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadState:
    revision: str | None  # pod-template revision the workload runs (None if unknown)
    replicas: int  # spec.replicas
    ready: bool  # rolled out: updated+available == replicas, generation observed


@dataclass(frozen=True)
class WebhookOutcome:
    webhook: str  # its name
    code: int | None  # the HTTP status code; None: no answer (timeout, refused, TLS, ...)
    error: str | None = None  # why there was no answer


@dataclass(frozen=True)
class Selection:
    """Which copy, by the revision it runs, each of tidegate's Services selects (None: no
    copy of this rollout). A copy takes a role when the role's Service selects it: a
    promotion flips `<service>-stable` to the copy that was analysed, and no pod is made."""

    stable: str | None
    canary: str | None


@dataclass(frozen=True)
class Observation:
    now: datetime  # timezone-aware UTC
    generation: int  # metadata.generation of the ProgressiveRollout
    target_revision: str  # revision of the user's Deployment pod template
    target_replicas: int  # replicas the user wants
    # The copies of the status's stable and canary revisions (None: no copy runs it).
    stable: WorkloadState | None
    canary: WorkloadState | None
    # False: the user's Deployment does not exist (deleted); `target_revision` is then the
    # status's own, and nothing new can be rolled out.
    target_found: bool = True
    # Requests found on the rollout: annotation (tidegate.api.*_ANNOTATION) -> who asked.
    requests: Mapping[str, str] = field(default_factory=dict)
    measurements: tuple[Measurement, ...] | None = None  # only when needs_measurement() said so
    traffic: Traffic | None = None  # what the routes hold now (None: could not be read)
    # Whether the data plane reports the routes, as they are now written, applied (Gateway
    # API: every parent Gateway accepted the route's generation). A write is not traffic
    # moved until then.
    traffic_applied: bool = True
    # What tidegate's Services select; None: not observed (each taken to select what it
    # should).
    selected: Selection | None = None
    # The copies of status.retiring, by revision (None: gone). A revision not in it was not
    # looked at.
    retiring: Mapping[str, WorkloadState | None] = field(default_factory=dict)
    # Whether the user's own Service (spec.service) selects only the stable copy's pods, so
    # that callers inside the cluster reach neither the canary nor the user's Deployment.
    service_isolated: bool = True
    # Whether the user's Deployment asks for pods of its own (spec.replicas > 0): after
    # adoption, or when the user resizes it, it is scaled back to zero once the route is
    # seen on tidegate's Services.
    target_running: bool = False
    webhooks: tuple[WebhookOutcome, ...] | None = None  # of those due_webhooks() named
    # The target's release (spec.waves.release), published for the other regions.
    target_release: str | None = None
    # The regions under spec.waves (after and before), by cluster, as last read.
    regions: Mapping[str, RegionRead] = field(default_factory=dict)
    # Of the regions wave_measurements_due() named: their metrics, by cluster.
    wave_measurements: Mapping[str, tuple[Measurement, ...]] = field(default_factory=dict)


# --- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnsureWorkload:
    """Create the copy that runs `revision` of the target template (one copy per revision:
    it never changes revision), or bring it to `replicas`. `role` says what it is for."""

    role: Role
    revision: str
    replicas: int


@dataclass(frozen=True)
class ScaleWorkload:
    """Scale the copy of the role's revision (as the decision's status names it)."""

    role: Role
    replicas: int


@dataclass(frozen=True)
class PointService:
    """Make tidegate's Service of `role` select the copy that runs `revision`."""

    role: Role
    revision: str


@dataclass(frozen=True)
class RemoveCopy:
    """Delete the copy that runs `revision`: it has no role, nothing selects it, and the
    scale-down delay has passed. `keep_template`: its pod template is kept first (the
    revision another region's rollback may bring back: spec.waves.revertOnLaterFailure,
    revertOnUpstreamRollback)."""

    revision: str
    keep_template: bool = False


@dataclass(frozen=True)
class ParkCopy:
    """Scale the copy that runs `revision` to zero and keep it: it has no role, nothing
    selects it, and the scale-down delay has passed, but its revision is one the rollout
    goes back to at once (spec.rollbackWindow), so its template stays."""

    revision: str


@dataclass(frozen=True)
class RestoreTarget:
    """Give the user's Deployment the pod template of the copy that runs `revision` (an
    undo): the target then holds that revision again."""

    revision: str


@dataclass(frozen=True)
class SetTraffic:
    """Make the routes hold `traffic` (the live split, header and mirror routes, preview).
    `restore`: they were seen holding something else than the status names (drift)."""

    traffic: Traffic
    restore: bool = False


@dataclass(frozen=True)
class IsolateService:
    """Make the user's Service select only the pods of the copy that runs `revision` (the
    one `<service>-stable` selects): callers inside the cluster, which do not go through the
    route, reach only the version that is stable."""

    revision: str


@dataclass(frozen=True)
class ReleaseTarget:
    """Scale the user's Deployment to zero: the stable copy serves in its place."""


@dataclass(frozen=True)
class EmitEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class ClearRequest:
    """Remove the request's annotation: it has been answered."""

    annotation: str


@dataclass(frozen=True)
class CallWebhooks:
    """Call every webhook of this type and report each outcome (log and Event): it decides
    nothing, so it is done last and never waited for."""

    webhook_type: WebhookType


@dataclass(frozen=True)
class DriveLoad:
    """Have the loadtester send spec.analysis.load's requests to the canary for `seconds`
    from now: a lease, renewed at each measurement, that runs out soon after the analysis
    stops asking (the step or the rollout ended, the operator died)."""

    seconds: float


Action = (
    EnsureWorkload
    | ScaleWorkload
    | PointService
    | RemoveCopy
    | ParkCopy
    | RestoreTarget
    | ReleaseTarget
    | IsolateService
    | SetTraffic
    | EmitEvent
    | ClearRequest
    | CallWebhooks
    | DriveLoad
)

# A load lease covers the next interval and this share of it more (at least LOAD_SLACK_MIN),
# for a measurement made a little late.
LOAD_SLACK_SHARE = 0.5
LOAD_SLACK_MIN = timedelta(seconds=5)


def load_lease(interval: timedelta) -> float:
    """Seconds of load asked for at a step's start and at each of its measurements."""
    return (interval + max(interval * LOAD_SLACK_SHARE, LOAD_SLACK_MIN)).total_seconds()


@dataclass(frozen=True)
class Decision:
    status: RolloutStatus
    actions: tuple[Action, ...]
    requeue_after: float | None  # seconds until the engine next needs a call; None: on change


# --- traffic and copies ---


def status_traffic(status: RolloutStatus) -> Traffic:
    """The traffic the status says the routes should hold."""
    matches = tuple(
        HeaderMatch(
            m.header_name,
            m.header_value.regex
            if m.header_value.regex is not None
            else m.header_value.exact or "",
            regex=m.header_value.regex is not None,
        )
        for m in status.header_route or ()
    )
    return Traffic(
        canary_weight=status.canary_weight,
        header_route=matches,
        mirror_percent=status.mirror_percent,
        preview=status.preview_active,
    )


def store_traffic(status: RolloutStatus, traffic: Traffic) -> None:
    status.canary_weight = traffic.canary_weight
    status.header_route = [
        HeaderRouteMatch(
            header_name=m.name,
            header_value=StringMatch(regex=m.value) if m.regex else StringMatch(exact=m.value),
        )
        for m in traffic.header_route
    ] or None
    status.mirror_percent = traffic.mirror_percent
    status.preview_active = traffic.preview


# --- helpers --------------------------------------------------------------------------------


def current_step(plan: Plan, status: RolloutStatus) -> PlanStep | None:
    index = status.current_step_index
    if index is None or not 0 <= index < len(plan.steps):
        return None
    return plan.steps[index]


def ready_at(workload: WorkloadState | None, revision: str, replicas: int) -> bool:
    return (
        workload is not None
        and workload.ready
        and workload.revision == revision
        and workload.replicas == replicas
    )


def drifted(workload: WorkloadState | None, revision: str, replicas: int) -> bool:
    return workload is None or workload.revision != revision or workload.replicas != replicas


def autoscaled_replicas(workload: WorkloadState | None, wanted: int) -> int:
    """The replica count to hold a copy at when an HPA scales it: the count it runs, which
    the HPA chose, unless it runs none while `wanted` says it should run."""
    if workload is not None and workload.replicas > 0 and wanted > 0:
        return workload.replicas
    return wanted


def pod_split(weight: int, replicas: int) -> tuple[int, int]:
    """How many pods the canary and the stable copy run for `weight` when the traffic share
    is the share of ready pods (trafficRouting.podRatio), with `replicas` the target's
    count: the canary gets ceil(weight * replicas / 100) and stable the rest. Two limits:
    any weight above 0 gives the canary one pod at least, and stable keeps one pod at least
    until the promotion (so a rollback never sends requests to a copy with no pod). Below
    100 the canary leaves that pod to stable; at 100 it runs `replicas` and stable one."""
    replicas = max(replicas, 1)
    if weight <= 0:
        return 0, replicas
    most = replicas if weight >= 100 else max(replicas - 1, 1)
    canary = min(max(-(-weight * replicas // 100), 1), most)
    return canary, max(replicas - canary, 1)


def split_weight(canary: int, stable: int) -> int:
    """The canary's share, in percent (rounded), of `canary + stable` pods."""
    total = canary + stable
    return 0 if total == 0 else round(100 * canary / total)


def canary_runs(status: RolloutStatus) -> bool:
    """Whether the canary copy runs pods in this phase (a rollout is under way or being
    promoted); between rollouts it is at zero."""
    return status.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)
