"""The state of one call of the engine, and the small things every stage does with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from tidegate.api import (
    MAX_ROLLBACK_WINDOW,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    WebhookType,
)
from tidegate.durations import parse_duration
from tidegate.engine.model import (
    SOON_SECONDS,
    Action,
    ClearRequest,
    EmitEvent,
    EnsureWorkload,
    Observation,
    Role,
    SetTraffic,
    WorkloadState,
    autoscaled_replicas,
    drifted,
    pod_split,
    ready_at,
    store_traffic,
)
from tidegate.plan import Plan, Traffic
from tidegate.strategies import plan_for


@dataclass
class Call:
    """One call of `reconcile()`: what it was given, the status it is making, and what it
    decided so far. The stages (upkeep, steps, endings, ...) are functions of it."""

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

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.emit(EmitEvent(type=type_, reason=reason, message=message))

    @property
    def pod_ratio(self) -> bool:
        """Whether the traffic share is the share of ready pods (trafficRouting.podRatio)."""
        return self.spec.traffic_routing.pod_ratio is not None

    def split(self, weight: int) -> tuple[int, int]:
        """The pods (canary, stable) that carry `weight` with trafficRouting.podRatio."""
        return pod_split(weight, self.obs.target_replicas)

    def route(self, traffic: Traffic) -> None:
        store_traffic(self.status, traffic)
        self.emit(SetTraffic(traffic=traffic))

    def holds(self, traffic: Traffic) -> bool:
        """Whether the routes were seen holding `traffic`, applied by the data plane, when
        this reconcile began."""
        return self.obs.traffic == traffic and self.obs.traffic_applied

    def wake_at(self, when: datetime) -> None:
        self.wakeups.append(max((when - self.now).total_seconds(), SOON_SECONDS))

    def await_change(self) -> None:
        """Nothing to do until something watched changes (a Deployment becomes ready, the
        route is updated): those wake the rollout. No timer."""

    def say(self, reason: str, message: str) -> None:
        self.reason = reason
        self.status.message = message

    def sized(self, workload: WorkloadState | None, replicas: int) -> int:
        """The replica count the copy should have: `replicas`, or with an autoscaler what
        its HPA chose (see `autoscaled_replicas`)."""
        if self.spec.autoscaler_ref is None:
            return replicas
        return autoscaled_replicas(workload, replicas)

    def ready(self, workload: WorkloadState | None, revision: str, replicas: int) -> bool:
        return ready_at(workload, revision, self.sized(workload, replicas))

    def selects(self, role: Role, revision: str | None) -> bool:
        """Whether tidegate's Service of `role` is seen to select the copy of `revision`."""
        selected = self.obs.selected
        if selected is None:
            return True
        return (selected.stable if role == "stable" else selected.canary) == revision

    def service(self, role: Role) -> str:
        return f"Service {self.spec.service.name}-{role}"

    def heal(
        self, role: Role, workload: WorkloadState | None, revision: str, replicas: int | None = None
    ) -> None:
        if replicas is None:
            replicas = self.stable_size() if role == "stable" else self.obs.target_replicas
        replicas = self.sized(workload, replicas)
        wanted = EnsureWorkload(role=role, revision=revision, replicas=replicas)
        if drifted(workload, revision, replicas) and wanted not in self.actions:
            # (A size decided earlier in this call for the same copy gives way.)
            self.actions = [
                a
                for a in self.actions
                if not (isinstance(a, EnsureWorkload) and (a.role, a.revision) == (role, revision))
            ]
            self.emit(wanted)
        self.status.replicas = self.obs.target_replicas

    def stable_size(self) -> int:
        """The stable copy's size: the target's, except while a canary runs with
        trafficRouting.podRatio, where stable gives up the pods the canary's weight takes."""
        st = self.status
        running = st.phase in (
            RolloutPhase.PROGRESSING,
            RolloutPhase.PAUSED,
            RolloutPhase.PROMOTING,
        )
        if self.pod_ratio and running and st.canary_weight > 0:
            return self.split(st.canary_weight)[1]
        return self.obs.target_replicas

    def stable_now(self, revision: str, release: str | None) -> None:
        st = self.status
        before = st.stable_revision
        if before is not None and before != revision:
            history = [r for r in st.stable_history or () if r not in (before, revision)]
            st.stable_history = [*history, before][-MAX_ROLLBACK_WINDOW:]
        st.stable_revision = revision
        st.stable_release = release
        st.stable_since = self.now

    def answer(self, annotation: str) -> str:
        """Mark a request answered (its annotation is removed); returns who asked."""
        self.answered.add(annotation)
        self.emit(ClearRequest(annotation))
        return self.obs.requests[annotation]
