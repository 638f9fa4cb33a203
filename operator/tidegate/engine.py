"""The rollout engine: a pure function from (spec, status, observation) to a decision.

No I/O, no sleeping, no clock reads: the caller observes the cluster, asks
`needs_measurement()` whether to query Prometheus, calls `reconcile()`, applies the actions in
order, stores the returned status and calls again after `requeue_after` seconds (or on change).

The engine runs plans (`tidegate.plan`), which the strategies make from the spec; it does not
know canary from blue/green. A plan step runs once the new version is ready at the step's
size and the routes really hold the step's traffic (as observed), so a step's analysis never
measures a split that was asked for but not yet applied.

Choices worth knowing:
- After a promotion `canaryRevision` is cleared (no canary runs); after a rollback it is kept,
  so the failed revision is not retried until the Deployment template changes again.
- The progress deadline counts from when the wait for the new version began (`waitingSince`):
  at the start, at a step that changes its size, or when it stops being ready mid-rollout.
- An analysis step is complete at once when analysis is skipped or there are no metrics.
- Every end of a rollout (promotion, rollback, cancel) routes all traffic to the stable
  version with no header or mirror route. The canary is scaled to zero only once the data
  plane reports that route applied (`traffic_applied`) and a scale-down delay has passed
  (`canaryScaleDownAt`), so no request is ever sent where no pod is left to answer it; the
  user's Deployment likewise after adoption (`targetScaleDownAt`).
- Traffic counts as moved only when the routes hold it *and* the data plane reports it
  applied: a step's analysis never measures a split the gateway has not taken yet, and
  waiting for it counts against the progress deadline.
- Initialisation (adopting the first stable revision) also runs while spec.paused is set; a
  promotion already under way stays in Promoting (without acting) while paused.
- Requests (annotations: promote, promote-full, abort, retry) are each answered once: acted
  on, or refused with a Warning Event saying why, and then cleared, so a request never lingers
  to act later by surprise. The one exception is a promote made while the rollout is paused
  for promotion but this call did not reach the pause (its route was being restored): it stays
  for the next call. Abort acts even under spec.paused: taking traffic back is never held.
- Webhooks (spec.webhooks) are checks like the metrics: `due_webhooks()` says which to call
  now, and their outcomes come in the observation. preRollout, confirmTrafficIncrease and
  confirmPromotion gate a point of the plan (`status.webhookGate`): the rollout stops there,
  the next call asks them, and they are asked again every interval while one refuses
  (preRollout fails the rollout at once instead). rollout webhooks are judged with the
  metrics; rollback webhooks are polled every interval while the rollout runs, before
  anything else (a 2xx rolls back, even before a request of the same call); postRollout
  webhooks are called (`CallWebhooks`) once a rollout ends, their outcome decides nothing.
  A full promotion asked by a person skips the confirm gates, never preRollout.
- With an autoscaler (spec.autoscalerRef), a copy's replica count is its HPA's: any non-zero
  count is accepted, kept across a template change and never reset, and readiness means
  "rolled out at its own count". A copy at zero that should run is still brought up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from tidegate.analysis import Measurement, judge
from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    Condition,
    ConditionStatus,
    ConditionType,
    HeaderRouteMatch,
    MetricPhase,
    OnInconclusive,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    StringMatch,
    WavesStatus,
    Webhook,
    WebhookPhase,
    WebhookResult,
    WebhookType,
)
from tidegate.durations import parse_duration
from tidegate.plan import (
    STABLE_ONLY,
    Analyse,
    AwaitPromotion,
    HeaderMatch,
    Hold,
    Plan,
    PlanStep,
    Traffic,
)
from tidegate.strategies import plan_for
from tidegate.waves import RegionRead, judge_after, regions_to_measure, rejected_later

Role = Literal["stable", "canary"]

_REQUEST_NAMES = {
    PROMOTE_ANNOTATION: "promote",
    PROMOTE_FULL_ANNOTATION: "promote --full",
    ABORT_ANNOTATION: "abort",
    RETRY_ANNOTATION: "retry",
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
_ROLLED_BACK_PHASES = frozenset({RolloutPhase.FAILED, RolloutPhase.ABORTED})
_READY_PHASES = frozenset(
    {RolloutPhase.INITIALIZED, RolloutPhase.SUCCEEDED, RolloutPhase.CANCELLED}
)
_PROGRESSING_PHASES = frozenset(
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
    body: str = ""  # the start of the answer's body


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
    revision a later region's rollback may bring back, spec.waves.revertOnLaterFailure)."""

    revision: str
    keep_template: bool = False


@dataclass(frozen=True)
class SetTraffic:
    """Make the routes hold `traffic` (the live split, header and mirror routes, preview)."""

    traffic: Traffic


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


# --- public functions -----------------------------------------------------------------------


def needs_measurement(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Whether the next reconcile should be given fresh measurements."""
    if spec.paused or status.phase != RolloutPhase.PROGRESSING:
        return False
    if status.step_started_at is None or status.next_measurement_at is None:
        return False
    step = _current_step(plan_for(spec), status)
    return step is not None and isinstance(step.wait, Analyse) and now >= status.next_measurement_at


def wave_measurements_due(
    spec: RolloutSpec, status: RolloutStatus, now: datetime
) -> tuple[str, ...]:
    """The regions under spec.waves.after whose metrics the next reconcile should be given."""
    if spec.waves is None or status.phase is not RolloutPhase.WAITING_FOR_WAVE:
        return ()
    previous = status.waves.regions if status.waves is not None else []
    return regions_to_measure(spec.waves.after, previous, now)


def due_webhooks(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> tuple[Webhook, ...]:
    """The webhooks the next reconcile should be given the outcomes of: those of the gate the
    rollout waits at, the rollout webhooks with each measurement, the rollback webhooks every
    interval while the rollout runs."""
    if status.phase not in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
        return ()
    due: list[Webhook] = []
    gate, when = status.webhook_gate, status.next_webhook_at
    if (
        gate is not None
        and when is not None
        and now >= when
        and not spec.paused
        and status.phase is RolloutPhase.PROGRESSING
    ):
        due += spec.webhooks_of(gate)
    if needs_measurement(spec, status, now):
        due += spec.webhooks_of(WebhookType.ROLLOUT)
    poll = status.next_rollback_poll_at
    if poll is not None and now >= poll:
        due += spec.webhooks_of(WebhookType.ROLLBACK)
    return tuple(due)


def webhook_body(
    webhook: Webhook, namespace: str, name: str, status: RolloutStatus
) -> dict[str, object]:
    """The JSON body POSTed to a webhook (docs/api.md, Webhooks)."""
    index = status.current_step_index
    step = (
        None
        if index is None or status.current_step_name is None
        else {"index": index, "name": status.current_step_name}
    )
    return {
        "rollout": {"name": name, "namespace": namespace},
        "phase": status.phase.value if status.phase is not None else None,
        "revisions": {"stable": status.stable_revision, "canary": status.canary_revision},
        "step": step,
        "weight": status.canary_weight,
        "webhook": {"name": webhook.name, "type": webhook.type.value},
        "metadata": dict(webhook.metadata),
    }


def reconcile(spec: RolloutSpec, status: RolloutStatus, obs: Observation) -> Decision:
    return _Reconciler(spec, status, obs).run()


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


def _store_traffic(status: RolloutStatus, traffic: Traffic) -> None:
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


def _current_step(plan: Plan, status: RolloutStatus) -> PlanStep | None:
    index = status.current_step_index
    if index is None or not 0 <= index < len(plan.steps):
        return None
    return plan.steps[index]


def _ready_at(workload: WorkloadState | None, revision: str, replicas: int) -> bool:
    return (
        workload is not None
        and workload.ready
        and workload.revision == revision
        and workload.replicas == replicas
    )


def _drifted(workload: WorkloadState | None, revision: str, replicas: int) -> bool:
    return workload is None or workload.revision != revision or workload.replicas != replicas


def autoscaled_replicas(workload: WorkloadState | None, wanted: int) -> int:
    """The replica count to hold a copy at when an HPA scales it: the count it runs, which
    the HPA chose, unless it runs none while `wanted` says it should run."""
    if workload is not None and workload.replicas > 0 and wanted > 0:
        return workload.replicas
    return wanted


def canary_runs(status: RolloutStatus) -> bool:
    """Whether the canary copy runs pods in this phase (a rollout is under way or being
    promoted); between rollouts it is at zero."""
    return status.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)


def judge_webhook(webhook: Webhook, outcome: WebhookOutcome | None, now: datetime) -> WebhookResult:
    subject = f'webhook "{webhook.name}" ({webhook.type.value})'
    code = None if outcome is None else outcome.code
    if outcome is None:
        phase, text = WebhookPhase.ERROR, f"{subject} was not called"
    elif code is None:
        phase, text = (
            WebhookPhase.ERROR,
            f"{subject} did not answer: {(outcome.error or '')[:2000]}",
        )
    elif 200 <= code < 300:
        phase, text = WebhookPhase.PASSED, f"{subject} answered {code}"
    else:
        said = outcome.body.strip()[:500]
        phase, text = (
            WebhookPhase.FAILED,
            f"{subject} answered {code}" + (f": {said}" if said else ""),
        )
    return WebhookResult(
        name=webhook.name, type=webhook.type, phase=phase, code=code, message=text, called_at=now
    )


_JUDGED = (MetricPhase.PASSED, MetricPhase.FAILED)

_GATE_HELD_REASONS = {
    WebhookType.CONFIRM_TRAFFIC_INCREASE: "TrafficIncreaseHeld",
    WebhookType.CONFIRM_PROMOTION: "PromotionHeld",
}


# --- the reconciler -------------------------------------------------------------------------


@dataclass
class _Reconciler:
    spec: RolloutSpec
    original: RolloutStatus
    obs: Observation
    status: RolloutStatus = field(init=False)
    plan: Plan = field(init=False)
    interval: timedelta = field(init=False)
    actions: list[Action] = field(default_factory=list)
    wakeups: list[float] = field(default_factory=list)
    # Names what is happening, for the conditions; None leaves them as they are.
    reason: str | None = None
    answered: set[str] = field(default_factory=set)  # request annotations answered
    gates_passed: set[WebhookType] = field(default_factory=set)  # by this call's outcomes
    # A rollout (re)started in this call: the webhook outcomes observed were asked for the
    # one before it, and pass no gate of this one.
    started: bool = False
    # The Wave condition as this call judged it (ok, reason, message); None: as it was.
    wave: tuple[bool, str, str] | None = None

    def __post_init__(self) -> None:
        self.status = self.original.model_copy(deep=True)
        self.plan = plan_for(self.spec)
        self.interval = parse_duration(self.spec.analysis.interval)

    @property
    def now(self) -> datetime:
        return self.obs.now

    def run(self) -> Decision:
        phase = self.status.phase
        if self._rollback_asked():
            pass  # a rollback webhook said yes: rolled back
        elif not self.obs.target_found:
            self._target_gone()
        elif self._act_on_requests():
            pass  # the request decided this call
        elif phase is None or self.status.stable_revision is None:
            self._initialize()
        elif phase is RolloutPhase.INITIALIZING:
            self._initializing()
        elif phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
            self._progress()
        elif phase is RolloutPhase.PROMOTING:
            self._promoting()
        elif phase is RolloutPhase.WAITING_FOR_WAVE:
            self._waiting_for_wave()
        else:
            self._steady()
        self._refuse_unanswered_requests()
        self._point_stable()
        self._isolate_service()
        self._scale_down_target()
        self._retire()
        poll = self.status.next_rollback_poll_at
        if poll is not None and self.status.phase in (
            RolloutPhase.PROGRESSING,
            RolloutPhase.PAUSED,
        ):
            self._wake_at(poll)
        self.status.observed_generation = self.obs.generation
        self._update_conditions()
        requeue = min(self.wakeups) if self.wakeups else None
        return Decision(status=self.status, actions=tuple(self.actions), requeue_after=requeue)

    # -- a target that went away --

    def _target_gone(self) -> None:
        """The target Deployment is gone: nothing new can be rolled out. A rollout under way
        is rolled back (its traffic all on stable); a promotion already under way finishes
        (the canary copy holds its template); otherwise stable keeps serving as it is."""
        st = self.status
        phase = st.phase
        assert st.stable_revision is not None  # (the reconciler sees to it)
        if phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
            self._roll_back(
                "TargetNotFound",
                f"the target Deployment {self.spec.target_ref.name} was deleted mid-rollout: "
                f"all traffic is back on the stable revision {st.stable_revision}",
            )
        elif phase is RolloutPhase.PROMOTING:
            self._promoting()
        elif phase is RolloutPhase.INITIALIZING:
            self._say("TargetNotFound", f"Waiting for the target {self.spec.target_ref.name}")
        else:
            self._heal("stable", self.obs.stable, st.stable_revision)
            self._scale_down_canary()

    # -- requests --

    def _answer(self, annotation: str) -> str:
        """Mark a request answered (its annotation is removed); returns who asked."""
        self.answered.add(annotation)
        self._emit(ClearRequest(annotation))
        return self.obs.requests[annotation]

    def _act_on_requests(self) -> bool:
        """Abort, retry and promote-full, when the rollout is where they make sense. True when
        one of them has decided this call. (Promote is answered by the pause it ends.)"""
        st, requests = self.status, self.obs.requests
        running = st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
        current = self.obs.target_revision == st.canary_revision
        if ABORT_ANNOTATION in requests and (running or st.phase is RolloutPhase.PROMOTING):
            # A promotion is aborted too: until it is done, stable is still the revision
            # before it, and the stable copy is given that back.
            self._abort(self._answer(ABORT_ANNOTATION))
            return True
        if ABORT_ANNOTATION in requests and st.phase is RolloutPhase.WAITING_FOR_WAVE:
            who = self._answer(ABORT_ANNOTATION)
            st.phase = RolloutPhase.ABORTED
            text = f"Aborted release {st.canary_release} before it started (asked by {who})"
            self._event("Warning", "Aborted", text)
            self._say("Aborted", text)
            self.wave = (False, "Aborted", text)
            return True
        if (
            RETRY_ANNOTATION in requests
            and st.phase in _ROLLED_BACK_PHASES
            and current
            and not self.spec.paused
        ):
            who = self._answer(RETRY_ANNOTATION)
            self._start_or_wait("RolloutRetried", f"; retry asked by {who}")
            return True
        if (
            PROMOTE_FULL_ANNOTATION in requests
            and running
            and current
            and not self.spec.paused
            and self._pre_rollout_done()
        ):
            who = self._answer(PROMOTE_FULL_ANNOTATION)
            index = (st.current_step_index or 0) + 1
            self._event(
                "Normal",
                "PromotedFully",
                f"Skipping steps {index}-{len(self.plan.steps)} and their analysis of revision "
                f"{st.canary_revision}: full promotion asked by {who}",
            )
            self._begin_promotion()
            return True
        return False

    def _refuse_unanswered_requests(self) -> None:
        """Every request this call could not act on is refused, with the reason, and cleared;
        except a promote for a pause this call did not reach."""
        st = self.status
        phase = st.phase.value if st.phase is not None else "new"
        for annotation in sorted(self.obs.requests):
            if annotation in self.answered:
                continue
            if annotation == PROMOTE_ANNOTATION and self._pause_ahead():
                continue
            if annotation not in _REQUEST_NAMES:
                continue
            if self.spec.paused and annotation != ABORT_ANNOTATION:
                why = "spec.paused is set; resume the rollout first"
            elif annotation == RETRY_ANNOTATION:
                why = (
                    f"the rollout is {phase}; only a Failed or Aborted rollout can be retried, "
                    "while the target still has the revision that failed"
                )
            elif annotation == PROMOTE_ANNOTATION:
                why = f"nothing is paused for promotion; the rollout is {phase}"
            elif (
                annotation == PROMOTE_FULL_ANNOTATION
                and st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
                and not self._pre_rollout_done()
            ):
                why = "the preRollout webhooks have not all answered 2xx yet"
            elif st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
                why = "a newer revision of the target is about to be rolled out"
            else:
                why = f"no rollout is in progress; the rollout is {phase}"
            who = self._answer(annotation)
            self._event(
                "Warning",
                "RequestRefused",
                f"{_REQUEST_NAMES[annotation]} asked by {who} was not done: {why}",
            )

    def _pause_ahead(self) -> bool:
        """Whether the rollout is at a pause for promotion that this call did not reach."""
        st = self.status
        step = _current_step(self.plan, st)
        return (
            not self.spec.paused
            and st.phase in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
            and step is not None
            and (isinstance(step.wait, AwaitPromotion) or st.inconclusive_pause)
        )

    def _abort(self, who: str) -> None:
        st = self.status
        revision = st.canary_revision
        self._end_rollout(RolloutPhase.ABORTED)
        text = (
            f"Aborted the rollout of revision {revision} (asked by {who}): all traffic is on "
            f"the stable revision {st.stable_revision}"
        )
        self._event("Warning", "Aborted", text)
        self._say("Aborted", text)

    # -- webhooks --

    def _outcomes(self, hooks: list[Webhook]) -> list[WebhookOutcome] | None:
        """The outcome of each of `hooks` in the observation; None unless all were called."""
        by_name = {o.webhook: o for o in self.obs.webhooks or ()}
        found = [by_name.get(h.name) for h in hooks]
        return None if any(o is None for o in found) else [o for o in found if o is not None]

    def _record(self, results: list[WebhookResult]) -> list[WebhookResult]:
        """Keep each webhook's latest result in the status (in the order of spec.webhooks)."""
        if results:
            latest = {r.name: r for r in self.status.webhooks}
            latest.update((r.name, r) for r in results)
            order = [w.name for w in self.spec.webhooks]
            self.status.webhooks = sorted(
                latest.values(),
                key=lambda r: order.index(r.name) if r.name in order else len(order),
            )
        return results

    def _judged(self, hooks: list[Webhook]) -> list[WebhookResult] | None:
        outcomes = self._outcomes(hooks)
        if outcomes is None:
            return None
        return self._record(
            [judge_webhook(h, o, self.now) for h, o in zip(hooks, outcomes, strict=True)]
        )

    def _rollback_asked(self) -> bool:
        """Polls the rollback webhooks while the rollout runs: True when one answered 2xx and
        the rollout was rolled back."""
        st = self.status
        hooks = self.spec.webhooks_of(WebhookType.ROLLBACK)
        if not hooks or st.phase not in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED):
            return False
        due = st.next_rollback_poll_at
        if due is None:  # webhooks added while the rollout runs
            st.next_rollback_poll_at = self.now + self.interval
            return False
        if self.now < due:
            return False
        results = self._judged(hooks)
        if results is None:
            return False
        st.next_rollback_poll_at = self.now + self.interval
        yes = [r for r in results if r.phase is WebhookPhase.PASSED]
        if not yes:
            return False
        self._roll_back("RolledBackByWebhook", f"{yes[0].message}: a rollback was asked")
        return True

    def _pre_rollout_done(self) -> bool:
        return self.status.pre_rollout_passed or not self.spec.webhooks_of(WebhookType.PRE_ROLLOUT)

    def _may_route(self, label: str, step: PlanStep) -> bool:
        """Whether the webhooks let the routes take the step's traffic now."""
        st = self.status
        if step.traffic != STABLE_ONLY and not self._gate(WebhookType.PRE_ROLLOUT, label):
            return False
        increase = step.traffic.canary_weight > st.canary_weight
        return not increase or self._gate(WebhookType.CONFIRM_TRAFFIC_INCREASE, label)

    def _gate(self, type_: WebhookType, label: str) -> bool:
        """Whether the rollout may go past a point the webhooks of `type_` gate: they all
        answered 2xx in this call. Otherwise it waits there: asks them next call, or again
        an interval after a refusal; a preRollout refusal rolls back."""
        st = self.status
        hooks = self.spec.webhooks_of(type_)
        if not hooks or (type_ is WebhookType.PRE_ROLLOUT and st.pre_rollout_passed):
            return True
        asked = (
            not self.started
            and self.original.webhook_gate is type_
            and type_ not in self.gates_passed
        )
        results = self._judged(hooks) if asked else None
        if results is None:
            if st.webhook_gate is not type_:
                st.webhook_gate, st.next_webhook_at = type_, self.now
            names = ", ".join(f'"{h.name}"' for h in hooks)
            self._say("WaitingForWebhooks", f"{label}: asking the {type_.value} webhooks ({names})")
            self._wake_at(st.next_webhook_at or self.now)
            return False
        refusing = [r for r in results if r.phase is not WebhookPhase.PASSED]
        before = {r.name: r.phase for r in self.original.webhooks}
        if not refusing:
            st.webhook_gate, st.next_webhook_at = None, None
            self.gates_passed.add(type_)
            if type_ is WebhookType.PRE_ROLLOUT:
                st.pre_rollout_passed = True
            if any(
                before.get(h.name, WebhookPhase.PASSED) is not WebhookPhase.PASSED for h in hooks
            ):
                self._event(
                    "Normal", "WebhooksConfirmed", f"{label}: {type_.value} webhooks answered 2xx"
                )
            return True
        first = refusing[0]
        if type_ is WebhookType.PRE_ROLLOUT:
            self._roll_back("PreRolloutWebhookFailed", first.message)
            return False
        st.next_webhook_at = self.now + self.interval
        reason = _GATE_HELD_REASONS[type_]
        text = f"{label}: held by {first.message}; asking again every {self.spec.analysis.interval}"
        if before.get(first.name) is not first.phase:
            self._event("Warning", reason, text)
        self._say(reason, text)
        self._wake_at(st.next_webhook_at)
        return False

    # -- small utilities --

    def _emit(self, action: Action) -> None:
        self.actions.append(action)

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self._emit(EmitEvent(type=type_, reason=reason, message=message))

    def _route(self, traffic: Traffic) -> None:
        _store_traffic(self.status, traffic)
        self._emit(SetTraffic(traffic=traffic))

    def _holds(self, traffic: Traffic) -> bool:
        """Whether the routes were seen holding `traffic`, applied by the data plane, when
        this reconcile began."""
        return self.obs.traffic == traffic and self.obs.traffic_applied

    def _wake_at(self, when: datetime) -> None:
        self.wakeups.append(max((when - self.now).total_seconds(), SOON_SECONDS))

    def _await_change(self) -> None:
        """Nothing to do until something watched changes (a Deployment becomes ready, the
        route is updated): those wake the rollout. No timer."""

    def _say(self, reason: str, message: str) -> None:
        self.reason = reason
        self.status.message = message

    def _sized(self, workload: WorkloadState | None, replicas: int) -> int:
        """The replica count the copy should have: `replicas`, or with an autoscaler what
        its HPA chose (see `autoscaled_replicas`)."""
        if self.spec.autoscaler_ref is None:
            return replicas
        return autoscaled_replicas(workload, replicas)

    def _ready(self, workload: WorkloadState | None, revision: str, replicas: int) -> bool:
        return _ready_at(workload, revision, self._sized(workload, replicas))

    def _selects(self, role: Role, revision: str | None) -> bool:
        """Whether tidegate's Service of `role` is seen to select the copy of `revision`."""
        selected = self.obs.selected
        if selected is None:
            return True
        return (selected.stable if role == "stable" else selected.canary) == revision

    def _service(self, role: Role) -> str:
        return f"Service {self.spec.service.name}-{role}"

    def _heal(
        self, role: Role, workload: WorkloadState | None, revision: str, replicas: int | None = None
    ) -> None:
        replicas = self.obs.target_replicas if replicas is None else replicas
        replicas = self._sized(workload, replicas)
        wanted = EnsureWorkload(role=role, revision=revision, replicas=replicas)
        if _drifted(workload, revision, replicas) and wanted not in self.actions:
            self._emit(wanted)
        self.status.replicas = self.obs.target_replicas

    # -- initialisation --

    def _initialize(self) -> None:
        st = self.status
        st.phase = RolloutPhase.INITIALIZING
        st.stable_revision = self.obs.target_revision
        self._initializing()

    def _initializing(self) -> None:
        st = self.status
        # Nothing serves canary traffic yet, so simply adopt whatever the template is now.
        st.stable_revision = self.obs.target_revision
        self._heal("stable", self.obs.stable, st.stable_revision)
        if not self._ready(self.obs.stable, st.stable_revision, self.obs.target_replicas):
            self._say("Initializing", f"Waiting for stable revision {st.stable_revision}")
            self._await_change()
        elif not self._selects("stable", st.stable_revision):
            # (`_point_stable` points it, now that the copy is ready.)
            self._say("Initializing", f"Waiting for {self._service('stable')} to select it")
            self._await_change()
        else:
            # The route moves to the stable copy only once it can serve: adopting a live
            # application must not drop its traffic.
            self._route(STABLE_ONLY)
            st.phase = RolloutPhase.INITIALIZED
            self._stable_now(st.stable_revision, self.obs.target_release)
            self._say("Initialized", f"Stable revision {st.stable_revision} is ready")
            self._event("Normal", "Initialized", st.message)

    # -- steady phases --

    def _steady(self) -> None:
        st, target = self.status, self.obs.target_revision
        assert st.stable_revision is not None
        if self.spec.paused:
            return
        if self._revert_on_later_failure():
            return
        failed_before = st.phase in _ROLLED_BACK_PHASES and target == st.canary_revision
        if target != st.stable_revision and not failed_before:
            self._start_or_wait("RolloutStarted")
            return
        release = self.obs.target_release
        if st.stable_release is None and release is not None and target == st.stable_revision:
            # Written by an operator from before waves: published from now on.
            self._stable_now(target, release)
        self._heal("stable", self.obs.stable, st.stable_revision)
        self._scale_down_canary()

    # -- scaling down what no longer takes traffic --

    def _scale_down_canary(self) -> None:
        """Between rollouts the canary takes no traffic, so it runs no pods either: scaled to
        zero once the data plane is seen sending all traffic to stable and the scale-down
        delay has passed since (requests already on their way there finish). A route that
        drifts back to the canary, or a write that failed, starts the wait again."""
        st, canary = self.status, self.obs.canary
        if canary is None or canary.replicas == 0:
            st.canary_scale_down_at = None
            return
        selected = self.obs.selected
        if not self._holds(STABLE_ONLY) or (
            selected is not None and selected.stable == canary.revision
        ):
            # (The stable Service selects it after a promotion was aborted past its flip, or
            # a revert to the release before: until it is pointed back.)
            st.canary_scale_down_at = None
            return  # woken when the route (or its status, or the Service) changes
        if st.canary_scale_down_at is None:
            rolled_back = st.phase in _ROLLED_BACK_PHASES
            delay = self.spec.strategy.scale_down_delay(rolled_back)
            st.canary_scale_down_at = self.now + timedelta(seconds=delay)
        if self.now < st.canary_scale_down_at:
            self._wake_at(st.canary_scale_down_at)
            return
        self._emit(ScaleWorkload(role="canary", replicas=0))
        st.canary_scale_down_at = None

    def _isolate_service(self) -> None:
        """Once the stable copy serves the route, the user's Service selects it alone: the
        canary, analysed through the route's weights, is never reached around them."""
        adopted = self.status.phase not in (None, RolloutPhase.INITIALIZING)
        ours = self.obs.traffic is not None and self.obs.traffic_applied
        selected = self.obs.selected
        stable = selected.stable if selected is not None else self.status.stable_revision
        if adopted and ours and stable is not None and not self.obs.service_isolated:
            self._emit(IsolateService(stable))

    def _point_stable(self) -> None:
        """`<service>-stable` selects the stable revision's copy once that copy is ready (at
        adoption, on a revert to the release before, after a promotion aborted past its
        flip, or when someone changed the selector); a promotion flips it itself."""
        st, selected, revision = self.status, self.obs.selected, self.status.stable_revision
        if selected is None or revision is None or selected.stable == revision:
            return
        if st.phase is RolloutPhase.PROMOTING and selected.stable == st.canary_revision:
            return  # flipped by the promotion, which ends once it has seen that
        if self._ready(self.obs.stable, revision, self.obs.target_replicas):
            self._emit(PointService("stable", revision))

    def _retire(self) -> None:
        """Copies whose revision lost its role (the stable copy a promotion replaced, a
        canary given up) go, once no Service of tidegate's selects them, the user's Service
        selects the stable copy alone, the gateway has applied the routes as written, and
        the scale-down delay has passed since; at once when they run no pod."""
        st, original = self.status, self.original
        roles = {st.stable_revision, st.canary_revision}
        for revision in (original.stable_revision, original.canary_revision):
            if revision is not None and revision not in roles and revision not in st.retiring:
                st.retiring.append(revision)
        observed = self.obs.retiring
        st.retiring = [
            r for r in st.retiring if r not in roles and not (r in observed and observed[r] is None)
        ][-8:]  # (a status holds 8 at most: more than two at once is already rare)
        present = {r: w for r, w in observed.items() if r in st.retiring and w is not None}
        if not present:
            st.retire_at = None
            return
        selected = self.obs.selected
        in_use = {selected.stable, selected.canary} if selected is not None else set(roles)
        safe = (
            self.obs.traffic is not None
            and self.obs.traffic_applied
            and self.obs.service_isolated
            and not in_use & set(present)
        )
        if not safe:
            st.retire_at = None
            return  # woken when the route, its status or a Service changes
        idle = all(w.replicas == 0 for w in present.values())
        if st.retire_at is None and not idle:
            st.retire_at = self.now + timedelta(
                seconds=self.spec.strategy.scale_down_delay(rolled_back=False)
            )
        if st.retire_at is not None and self.now < st.retire_at:
            self._wake_at(st.retire_at)
            return
        for revision in present:
            keep = revision == st.previous_stable_revision
            self._emit(RemoveCopy(revision, keep_template=keep))
        st.retire_at = None

    def _scale_down_target(self) -> None:
        """The user's Deployment runs no pods once tidegate's copies serve in its place: after
        adoption, or a resize by the user, once the route is seen applied on tidegate's
        Services, the user's Service selects the stable copy alone, and the scale-down delay
        has passed."""
        st = self.status
        adopted = st.phase not in (None, RolloutPhase.INITIALIZING)
        ours = self.obs.traffic is not None and self.obs.traffic_applied
        isolated = self.obs.service_isolated
        if not (self.obs.target_running and adopted and ours and isolated):
            st.target_scale_down_at = None
            return
        if st.target_scale_down_at is None:
            delay = self.spec.strategy.scale_down_delay(rolled_back=False)
            st.target_scale_down_at = self.now + timedelta(seconds=delay)
        if self.now < st.target_scale_down_at:
            self._wake_at(st.target_scale_down_at)
            return
        self._emit(ReleaseTarget())
        st.target_scale_down_at = None

    # -- waves --

    def _stable_now(self, revision: str, release: str | None) -> None:
        st = self.status
        st.stable_revision = revision
        st.stable_release = release
        st.stable_since = self.now

    def _start_or_wait(self, event_reason: str, note: str = "") -> None:
        """Start the rollout of the target, unless regions before this one must be waited for
        first: then no traffic moves (a rollout under way is ended) until they allow it."""
        waves = self.spec.waves
        if waves is None or not waves.after:
            self._start_rollout(event_reason, note)
            return
        st = self.status
        if canary_runs(st):
            self._end_rollout(RolloutPhase.WAITING_FOR_WAVE)
        st.phase = RolloutPhase.WAITING_FOR_WAVE
        self._wait_for(self.obs.target_revision)
        names = ", ".join(region.cluster for region in waves.after)
        self._event(
            "Normal",
            "WaitingForWave",
            f"Release {st.canary_release} (revision {st.canary_revision}) waits for {names}",
        )
        self._waiting_for_wave(event_reason, note)

    def _wait_for(self, revision: str) -> None:
        st = self.status
        st.canary_revision = revision
        st.canary_release = self.obs.target_release
        st.current_step_index = None
        st.current_step_name = None
        st.metrics = []
        st.webhooks = []
        st.waves = WavesStatus(release=st.canary_release or "", waiting_since=self.now)

    def _waiting_for_wave(self, event_reason: str = "RolloutStarted", note: str = "") -> None:
        st, target, waves = self.status, self.obs.target_revision, self.spec.waves
        self._scale_down_canary()  # a rollout under way may have been ended for this wait
        if target == st.stable_revision:
            text = f"Cancelled release {st.canary_release}: the target went back to stable"
            st.phase = RolloutPhase.CANCELLED
            st.canary_revision = st.canary_release = None
            self._event("Normal", "Cancelled", text)
            self._say("Cancelled", text)
            self.wave = (False, "Cancelled", text)
            return
        if target != st.canary_revision:
            self._wait_for(target)
        if waves is None or not waves.after:
            self._start_rollout(event_reason, note)
            return
        if self.spec.paused:
            self._say("PausedBySpec", "Waiting for the wave, paused: spec.paused is true")
            return
        assert st.waves is not None
        release = st.waves.release
        gate = judge_after(
            waves.after,
            self.obs.regions,
            release,
            st.waves.regions,
            self.obs.wave_measurements,
            self.now,
            self.interval,
        )
        st.waves.regions = list(gate.regions)
        rejected, waiting = gate.rejected, gate.waiting
        if rejected is not None:
            text = (
                f"Region {rejected.cluster} rolled release {release} back: it is not rolled "
                "out here"
            )
            self._fail_before_start("RejectedUpstream", text)
            return
        if waiting is None:
            names = ", ".join(r.cluster for r in gate.regions)
            text = f"Regions before this one are ready for release {release}: {names}"
            self.wave = (True, "UpstreamReady", text)
            self._event("Normal", WAVE_READY_EVENT, text)
            self._start_rollout(event_reason, note)
            return
        if waves.timeout is not None and st.waves.waiting_since is not None:
            deadline = st.waves.waiting_since + parse_duration(waves.timeout)
            if self.now >= deadline:
                text = (
                    f"Release {release} waited longer than waves.timeout ({waves.timeout}): "
                    f"{gate.describe()}"
                )
                self._fail_before_start("WaveTimeout", text)
                return
            self._wake_at(deadline)
        text = f"Waiting for region {waiting.cluster} before release {release}: {gate.describe()}"
        self._say(waiting.reason, text)
        self.wave = (False, waiting.reason, text)
        if gate.wake_at is not None:
            self._wake_at(gate.wake_at)

    def _fail_before_start(self, reason: str, text: str) -> None:
        """The waited-for release is never rolled out here: it took no traffic."""
        self.status.phase = RolloutPhase.FAILED
        self._event("Warning", reason, text)
        self._say(reason, text)
        self.wave = (False, reason, text)

    def _revert_on_later_failure(self) -> bool:
        """With waves.revertOnLaterFailure: a region after this one rolled back the release
        that is stable here; go back to the release before it. True when it did."""
        st, waves = self.status, self.spec.waves
        if (
            waves is None
            or not waves.revert_on_later_failure
            or st.phase is not RolloutPhase.SUCCEEDED
            or st.stable_release is None
            or st.previous_stable_revision is None
            or st.previous_stable_revision == st.stable_revision
        ):
            return False
        hit = rejected_later(waves.before, self.obs.regions, st.stable_release)
        if hit is None:
            return False
        cluster, phase = hit
        bad_revision, bad_release = st.stable_revision, st.stable_release
        assert bad_revision is not None
        self._stable_now(st.previous_stable_revision, st.previous_stable_release)
        st.previous_stable_revision = st.previous_stable_release = None
        st.canary_revision, st.canary_release = bad_revision, bad_release
        st.phase = RolloutPhase.FAILED
        self._route(STABLE_ONLY)
        assert st.stable_revision is not None
        self._heal("stable", self.obs.stable, st.stable_revision)
        text = (
            f"Region {cluster} rolled release {bad_release} back ({phase}): reverted here to "
            f"release {st.stable_release} (revision {st.stable_revision})"
        )
        self._event("Warning", "RevertedOnLaterFailure", text)
        self._say("RevertedOnLaterFailure", text)
        return True

    # -- rollout --

    def _start_rollout(self, event_reason: str, note: str = "") -> None:
        st, rev = self.status, self.obs.target_revision
        st.phase = RolloutPhase.PROGRESSING
        st.canary_revision = rev
        st.canary_release = self.obs.target_release
        st.current_step_index = 0
        st.failed_checks = 0
        st.passed_checks = 0
        st.inconclusive_checks = 0
        st.inconclusive_pause = False
        st.rollout_started_at = self.now
        st.step_started_at = None
        st.next_measurement_at = None
        st.waiting_since = None
        st.metrics = []
        st.current_step_name = None
        st.webhooks = []
        st.pre_rollout_passed = False
        st.webhook_gate = None
        st.next_webhook_at = None
        self.started = True
        # The canary runs again: a scale-down decided before this call would undo that.
        st.canary_scale_down_at = None
        self.actions = [
            a for a in self.actions if not (isinstance(a, ScaleWorkload) and a.role == "canary")
        ]
        rollback_hooks = self.spec.webhooks_of(WebhookType.ROLLBACK)
        st.next_rollback_poll_at = self.now + self.interval if rollback_hooks else None
        self._route(STABLE_ONLY)
        self._event(
            "Normal",
            event_reason,
            f"Rolling out revision {rev} (stable is {st.stable_revision}{note})",
        )
        self._advance()

    def _progress(self) -> None:
        st, target = self.status, self.obs.target_revision
        if self.spec.paused:
            st.phase = RolloutPhase.PAUSED
            self._say("PausedBySpec", "Rollout paused: spec.paused is true")
            return
        if target != st.canary_revision:
            if target == st.stable_revision:
                self._cancel()
            else:
                self._start_or_wait("RolloutRestarted")
            return
        st.phase = RolloutPhase.PROGRESSING
        self._advance()

    def _advance(self) -> None:
        st = self.status
        rev, stable_rev = st.canary_revision, st.stable_revision
        assert rev is not None and stable_rev is not None
        self._heal("stable", self.obs.stable, stable_rev)
        steps = self.plan.steps
        while st.phase is RolloutPhase.PROGRESSING:
            index = st.current_step_index or 0
            if index >= len(steps):
                label = f"After step {len(steps)}/{len(steps)}"
                if self._gate(WebhookType.PRE_ROLLOUT, label) and self._gate(
                    WebhookType.CONFIRM_PROMOTION, label
                ):
                    self._begin_promotion()
                return
            step = steps[index]
            st.current_step_name = step.name
            label = f"Step {index + 1}/{len(steps)} ({step.name})"
            # The new version gets no pod before its preRollout webhooks said yes.
            if not self._gate(WebhookType.PRE_ROLLOUT, label):
                return
            if not self._selects("canary", rev):
                # `<service>-canary` moves from another copy to the new one only while the
                # data plane sends it nothing (a rollout restarted mid-way first took the
                # traffic back).
                selected = self.obs.selected
                if selected is not None and selected.canary and not self._holds(STABLE_ONLY):
                    self._wait_for_route(label, STABLE_ONLY)
                    return
                self._emit(PointService("canary", rev))
            replicas = (
                self.obs.target_replicas if step.canary_replicas is None else step.canary_replicas
            )
            self._heal("canary", self.obs.canary, rev, replicas)
            if not self._ready(self.obs.canary, rev, replicas):
                self._wait_for_canary(rev)
                return
            if status_traffic(st) != step.traffic:
                if not self._selects("canary", rev):
                    self._say("WaitingForCanary", f"{label}: waiting for {self._service('canary')}")
                    self._await_change()
                    return
                if not self._may_route(label, step):
                    st.waiting_since = None  # held by a gate, not waiting on the cluster
                    return
                self._route(step.traffic)
                st.waiting_since = self.now  # the wait for the data plane begins
            if not self._holds(step.traffic):
                self._wait_for_route(label, step.traffic)
                return
            st.waiting_since = None
            if not self._run_step(index, step):
                return
            st.current_step_index = index + 1
            st.step_started_at = None
            st.next_measurement_at = None
            st.passed_checks = 0
            st.inconclusive_checks = 0

    def _wait_for_canary(self, rev: str) -> None:
        st = self.status
        if st.waiting_since is None:
            st.waiting_since = self.now
        deadline = st.waiting_since + timedelta(seconds=self.spec.progress_deadline_seconds)
        if self.now >= deadline:
            self._roll_back(
                "ProgressDeadlineExceeded",
                f"canary revision {rev} did not become ready within "
                f"{self.spec.progress_deadline_seconds}s",
            )
            return
        self._say("WaitingForCanary", f"Waiting for canary revision {rev} to become ready")
        self._wake_at(deadline)

    def _wait_for_route(self, label: str, traffic: Traffic) -> None:
        """The routes are written (or being restored) but the data plane has not reported
        them applied: the step waits, within the progress deadline."""
        st = self.status
        if st.waiting_since is None:
            st.waiting_since = self.now
        seconds = self.spec.progress_deadline_seconds
        deadline = st.waiting_since + timedelta(seconds=seconds)
        if self.now >= deadline:
            self._roll_back(
                "ProgressDeadlineExceeded",
                f"{label}: the data plane did not apply {traffic.describe()} within {seconds}s",
            )
            return
        written = self.obs.traffic == traffic
        what = "the gateway to apply" if written else "the routes to hold"
        self._say("WaitingForRoute", f"{label}: waiting for {what} {traffic.describe()}")
        self._wake_at(deadline)

    def _run_step(self, index: int, step: PlanStep) -> bool:
        """Run the current step, whose traffic the routes hold; True when it is complete."""
        st = self.status
        label = f"Step {index + 1}/{len(self.plan.steps)} ({step.name})"
        starting = st.step_started_at is None
        if st.step_started_at is None:
            st.step_started_at = self.now
            st.passed_checks = 0
            analysed = isinstance(step.wait, Analyse)
            st.next_measurement_at = self.now + self.interval if analysed else None
        match step.wait:
            case None:
                return True
            case Analyse(passes=passes):
                due = st.next_measurement_at
                done = self._analyse(label, passes)
                self._renew_load(starting or st.next_measurement_at != due, done)
                return done
            case Hold(duration=duration, reason=reason):
                return self._hold(label, st.step_started_at + duration, reason, step.name)
            case AwaitPromotion(timeout=timeout):
                return self._await_promotion(label, starting, timeout)
        raise AssertionError(f"unknown wait {step.wait!r}")

    def _renew_load(self, renew: bool, done: bool) -> None:
        """Load for the analysis (spec.analysis.load): asked for as the step's analysis starts
        and at each measurement after which it goes on; never once it is over or paused."""
        if (
            renew
            and not done
            and self.spec.analysis.load is not None
            and self.status.phase is RolloutPhase.PROGRESSING
        ):
            self._emit(DriveLoad(load_lease(self.interval)))

    def _hold(self, label: str, until: datetime, reason: str, what: str) -> bool:
        if self.now >= until:
            return True
        self._say(reason, f"{label}: {what} until {until.isoformat()}")
        self._wake_at(until)
        return False

    def _await_promotion(self, label: str, starting: bool, timeout: timedelta | None) -> bool:
        if PROMOTE_ANNOTATION in self.obs.requests and PROMOTE_ANNOTATION not in self.answered:
            # (One request ends one pause, not the next one too.)
            who = self._answer(PROMOTE_ANNOTATION)
            self._event("Normal", "Resumed", f"{label}: promoted, asked by {who}")
            return True
        st = self.status
        assert st.step_started_at is not None
        until = None if timeout is None else st.step_started_at + timeout
        if until is not None and self.now >= until:
            self._event("Normal", "AutoPromoted", f"{label}: promoted after {timeout}")
            return True
        what = "paused until promoted" + ("" if until is None else f" or {until.isoformat()}")
        if starting:
            self._event("Normal", "AwaitingPromotion", f"{label}: {what}")
        st.phase = RolloutPhase.PAUSED
        self._say("AwaitingPromotion", f"{label}: {what}")
        if until is not None:
            self._wake_at(until)
        return False

    def _analyse(self, label: str, required: int) -> bool:
        st = self.status
        if st.inconclusive_pause:
            return self._paused_inconclusive(label)
        due = st.next_measurement_at
        assert due is not None
        if self.now < due or self.obs.measurements is None:
            self._say(
                "Analysing",
                f"{label}: analysing at weight {st.canary_weight} "
                f"({st.passed_checks}/{required} checks passed)",
            )
            self._wake_at(due)
            return False
        by_metric = {m.metric: m for m in self.obs.measurements}
        verdicts = [judge(m, by_metric.get(m.name), self.now) for m in self.spec.analysis.metrics]
        st.metrics = [v.result for v in verdicts]
        hooks = self.spec.webhooks_of(WebhookType.ROLLOUT)
        outcomes = {o.webhook: o for o in self.obs.webhooks or ()}
        checks = self._record([judge_webhook(h, outcomes.get(h.name), self.now) for h in hooks])
        failures = [v.result.message for v in verdicts if v.result.phase is MetricPhase.FAILED]
        failures += [c.message for c in checks if c.phase is WebhookPhase.FAILED]
        unjudged = [v.result.message for v in verdicts if v.result.phase not in _JUDGED]
        unjudged += [c.message for c in checks if c.phase is WebhookPhase.ERROR]
        if failures:
            st.inconclusive_checks = 0
            st.failed_checks += 1
            limit = self.spec.analysis.failure_limit
            text = f"{failures[0]} (failure {st.failed_checks} of limit {limit})"
            if st.failed_checks >= limit:
                self._roll_back("AnalysisFailed", text)
                return False
            self._event("Warning", "CheckFailed", f"{label}: {text}")
        elif unjudged:
            # Nothing to judge (no data, NaN, a failed query): the step holds, and only a run
            # of these, with nothing conclusive between them, gives up.
            st.inconclusive_checks += 1
            limit = self.spec.analysis.inconclusive_limit
            text = (
                f"{unjudged[0]} (inconclusive {st.inconclusive_checks} in a row of limit {limit})"
            )
            if st.inconclusive_checks >= limit:
                if self.spec.analysis.on_inconclusive is OnInconclusive.PAUSE:
                    st.inconclusive_pause = True
                    self._event("Warning", "AnalysisInconclusive", f"{label}: {text}; paused")
                    return self._paused_inconclusive(label)
                self._roll_back("AnalysisInconclusive", text)
                return False
            self._event("Warning", "CheckInconclusive", f"{label}: {text}")
        else:
            st.inconclusive_checks = 0
            st.passed_checks += 1
            if st.passed_checks >= required:
                return True
        st.next_measurement_at = self.now + self.interval
        self._say(
            "Analysing",
            f"{label}: analysing at weight {st.canary_weight} "
            f"({st.passed_checks}/{required} checks passed, {st.failed_checks} failed)",
        )
        self._wake_at(st.next_measurement_at)
        return False

    def _paused_inconclusive(self, label: str) -> bool:
        """Paused after too many inconclusive checks (onInconclusive: Pause): a promote
        analyses the step again; an abort rolls back."""
        st = self.status
        if PROMOTE_ANNOTATION in self.obs.requests and PROMOTE_ANNOTATION not in self.answered:
            who = self._answer(PROMOTE_ANNOTATION)
            st.inconclusive_pause = False
            st.inconclusive_checks = 0
            st.next_measurement_at = self.now + self.interval
            self._event("Normal", "Resumed", f"{label}: analysing again, asked by {who}")
            self._say("Analysing", f"{label}: analysing again at weight {st.canary_weight}")
            self._wake_at(st.next_measurement_at)
            return False
        st.phase = RolloutPhase.PAUSED
        self._say(
            "AnalysisInconclusive",
            f"{label}: paused after {st.inconclusive_checks} inconclusive checks in a row; "
            "promote to analyse again, abort to roll back",
        )
        return False

    def _end_rollout(self, phase: RolloutPhase) -> None:
        """Every way a rollout ends: all traffic on stable. The canary is scaled away by a
        later call, once the data plane is seen to have moved the traffic
        (`_scale_down_canary`)."""
        st = self.status
        self._route(STABLE_ONLY)
        if phase in _ROLLED_BACK_PHASES and st.stable_revision is not None:
            # A promotion under way may have begun to give the stable copy the new template.
            self._heal("stable", self.obs.stable, st.stable_revision)
        st.canary_scale_down_at = None
        st.phase = phase
        st.step_started_at = None
        st.next_measurement_at = None
        st.waiting_since = None
        st.inconclusive_pause = False
        st.webhook_gate = None
        st.next_webhook_at = None
        st.next_rollback_poll_at = None
        if self.spec.webhooks_of(WebhookType.POST_ROLLOUT):
            self._emit(CallWebhooks(WebhookType.POST_ROLLOUT))

    def _roll_back(self, reason: str, text: str) -> None:
        revision = self.status.canary_revision
        self._end_rollout(RolloutPhase.FAILED)
        self._event("Warning", "RolledBack", f"Rolled back revision {revision}: {text}")
        self._say(reason, text)

    def _cancel(self) -> None:
        st = self.status
        message = (
            f"Cancelled the rollout of revision {st.canary_revision}: the target went back to "
            f"the stable revision {st.stable_revision}"
        )
        self._end_rollout(RolloutPhase.CANCELLED)
        self._event("Normal", "Cancelled", message)
        st.canary_revision = None
        self._say("Cancelled", message)

    # -- promotion --

    def _begin_promotion(self) -> None:
        st = self.status
        st.phase = RolloutPhase.PROMOTING
        st.step_started_at = None
        st.next_measurement_at = None
        st.webhook_gate = None
        st.next_webhook_at = None
        st.next_rollback_poll_at = None
        st.current_step_name = None  # past the last step: the phase says what happens
        st.waiting_since = self.now  # the progress deadline counts from here
        self._event("Normal", "Promoting", f"Promoting revision {st.canary_revision} to stable")
        self._promoting()

    def _promoting(self) -> None:
        """The copy that was analysed becomes stable: brought to the stable copy's size, then
        `<service>-stable` flips to it. No other pod is made, the pods that served the last
        step go on serving, and the stable copy before it serves until the flip (it goes
        after the scale-down delay, `_retire`). Within the progress deadline, else rolled
        back; a pause stops the clock."""
        st, rev = self.status, self.status.canary_revision
        assert rev is not None
        if self.spec.paused:
            st.waiting_since = None
            self._say("PausedBySpec", f"Promotion of revision {rev} paused: spec.paused is true")
            return
        if st.waiting_since is None:
            st.waiting_since = self.now  # (resumed, or written by an operator without it)
        seconds = self.spec.progress_deadline_seconds
        deadline = st.waiting_since + timedelta(seconds=seconds)
        # The size stable serves at now (with an HPA: what it chose), at least.
        full = self._sized(self.obs.stable, self.obs.target_replicas)
        canary = self.obs.canary
        runs = canary is not None and canary.revision == rev
        if not runs or canary.replicas < full:  # type: ignore[union-attr]
            wanted = EnsureWorkload(role="canary", revision=rev, replicas=full)
            if wanted not in self.actions:
                self._emit(wanted)
        flip = False
        if not (runs and canary.ready and canary.replicas >= full):  # type: ignore[union-attr]
            waiting = f"the canary copy of revision {rev} to run {full} ready pods"
        elif not self._selects("stable", rev):
            flip = True
            waiting = f"{self._service('stable')} to select the copy of revision {rev}"
        else:
            waiting = ""
        if flip and self.now < deadline:
            self._emit(PointService("stable", rev))
        if waiting:
            if self.now >= deadline:
                self._roll_back(
                    "ProgressDeadlineExceeded",
                    f"revision {rev} was not promoted within {seconds}s: still waiting for "
                    f"{waiting}",
                )
                return
            self._say("Promoting", f"Waiting for {waiting}")
            self._wake_at(deadline)
            return
        st.waiting_since = None
        self._end_rollout(RolloutPhase.SUCCEEDED)
        self._event("Normal", "Promoted", f"Revision {rev} promoted to stable")
        if st.stable_revision != rev:
            st.previous_stable_revision = st.stable_revision
            st.previous_stable_release = st.stable_release
        self._stable_now(rev, st.canary_release)
        st.canary_revision = None
        st.canary_release = None
        st.current_step_name = None
        self._say("Promoted", f"Revision {rev} promoted to stable")
        if self.obs.target_revision != rev:
            self.wakeups.append(SOON_SECONDS)  # a newer revision waits: the next call starts it

    # -- conditions --

    def _update_conditions(self) -> None:
        st = self.status
        phase = st.phase
        assert phase is not None
        wanted: list[tuple[str, bool, str]] = [
            (ConditionType.READY, phase in _READY_PHASES, self.reason or phase.value),
            (
                ConditionType.PROGRESSING,
                phase in _PROGRESSING_PHASES,
                self.reason if phase in _PROGRESSING_PHASES and self.reason else phase.value,
            ),
            (
                ConditionType.DEGRADED,
                phase in _ROLLED_BACK_PHASES,
                self.reason if phase in _ROLLED_BACK_PHASES and self.reason else "AsExpected",
            ),
        ]
        ours = {type_ for type_, _, _ in wanted}
        conditions = [self._condition(type_, ok, reason) for type_, ok, reason in wanted]
        if self.wave is not None:
            ours.add(ConditionType.WAVE)
            conditions.append(self._wave_condition(*self.wave))
        conditions += [c for c in st.conditions if c.type not in ours]
        st.conditions = conditions

    def _wave_condition(self, ok: bool, reason: str, message: str) -> Condition:
        status: ConditionStatus = "True" if ok else "False"
        existing = self.status.condition(ConditionType.WAVE)
        if existing is not None and (existing.status, existing.reason, existing.message) == (
            status,
            reason,
            message,
        ):
            return existing.model_copy(update={"observed_generation": self.obs.generation})
        changed = existing is None or existing.status != status
        return Condition(
            type=ConditionType.WAVE,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=self.now if changed else existing.last_transition_time,  # type: ignore[union-attr]
            observed_generation=self.obs.generation,
        )

    def _condition(self, type_: str, ok: bool, reason: str) -> Condition:
        status: ConditionStatus = "True" if ok else "False"
        existing = self.status.condition(type_)
        if existing is not None and existing.status == status:
            if self.reason is None:
                # Nothing happened: keep the condition exactly as it was.
                return existing.model_copy(update={"observed_generation": self.obs.generation})
            transition = existing.last_transition_time
        else:
            transition = self.now
        return Condition(
            type=type_,
            status=status,
            reason=reason,
            message=self.status.message,
            last_transition_time=transition,
            observed_generation=self.obs.generation,
        )
