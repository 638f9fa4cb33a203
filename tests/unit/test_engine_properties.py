"""Random specs (canary and blue/green) and observation sequences; invariants that must hold
on every decision."""

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from tidegate.analysis import Measurement
from tidegate.api import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    RETRY_ANNOTATION,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    WebhookType,
)
from tidegate.engine import (
    STEADY_PHASES,
    ClearRequest,
    Decision,
    EmitEvent,
    EnsureWorkload,
    Observation,
    PointService,
    RemoveCopy,
    ScaleWorkload,
    Selection,
    SetTraffic,
    WebhookOutcome,
    WorkloadState,
    due_webhooks,
    needs_measurement,
    reconcile,
    status_traffic,
)
from tidegate.plan import STABLE_ONLY, Traffic
from tidegate.strategies.canary import expand_steps

T0 = datetime(2025, 1, 1, tzinfo=UTC)
REPLICAS = 2
REVISIONS = ("v1", "v2", "v3")
ENDED = (
    RolloutPhase.FAILED,
    RolloutPhase.ABORTED,
    RolloutPhase.SUCCEEDED,
    RolloutPhase.CANCELLED,
)
REQUESTS = {
    "promote": PROMOTE_ANNOTATION,
    "promote-full": PROMOTE_FULL_ANNOTATION,
    "abort": ABORT_ANNOTATION,
    "retry": RETRY_ANNOTATION,
}

header_routes = st.one_of(
    st.just({}),
    st.builds(
        lambda exact: {"match": [{"headerName": "X-Canary", "headerValue": {"exact": exact}}]},
        st.sampled_from(["always", "yes"]),
    ),
    st.just({"match": [{"headerName": "Cookie", "headerValue": {"regex": "canary=1"}}]}),
)
step_dicts = st.one_of(
    st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
    st.just({"pause": {}}),
    st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(0, 300)),
    st.builds(lambda n: {"analysis": {"iterations": n}}, st.integers(1, 3)),
    st.builds(lambda h: {"setHeaderRoute": h}, header_routes),
    st.builds(lambda p: {"setMirrorRoute": {"percentage": p}}, st.integers(0, 100)),
)


@st.composite
def canary_strategies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        step_weight = draw(st.integers(25, 100))  # few steps, so rollouts can finish
        return {"stepWeight": step_weight, "maxWeight": draw(st.integers(step_weight, 100))}
    steps = draw(st.lists(step_dicts, min_size=1, max_size=5))
    weights = iter(sorted(s["setWeight"] for s in steps if "setWeight" in s))
    return {"steps": [{"setWeight": next(weights)} if "setWeight" in s else s for s in steps]}


@st.composite
def blue_green_strategies(draw: st.DrawFn) -> dict[str, Any]:
    strategy: dict[str, Any] = {
        "autoPromotionEnabled": draw(st.booleans()),
        "scaleDownDelaySeconds": draw(st.integers(0, 120)),
    }
    if draw(st.booleans()):
        strategy["autoPromotionSeconds"] = draw(st.integers(1, 300))
    if draw(st.booleans()):
        strategy["previewReplicaCount"] = 1
    for name in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if draw(st.booleans()):
            strategy[name] = {"iterations": draw(st.integers(1, 3))}
    return strategy


@st.composite
def specs(draw: st.DrawFn) -> RolloutSpec:
    metric_count = draw(st.integers(0, 2))
    metrics = [
        {"name": f"m{i}", "query": "q", "thresholdRange": {"min": 0, "max": 1}}
        for i in range(metric_count)
    ]
    if draw(st.booleans()):
        strategy = {"canary": draw(canary_strategies())}
    else:
        strategy = {"blueGreen": draw(blue_green_strategies())}
    hook_types = draw(st.lists(st.sampled_from(list(WebhookType)), unique=True, max_size=4))
    webhooks = [
        {"name": f"h-{t.value}", "type": t.value, "url": f"http://hooks/{t.value}"}
        for t in hook_types
    ]
    routing: dict[str, Any] = {"httpRoute": "app"}
    if draw(st.booleans()):
        routing["previewHTTPRoute"] = "app-preview"
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "app"},
            "service": {"name": "app", "port": 80},
            "strategy": strategy,
            "trafficRouting": {"gatewayAPI": routing},
            "analysis": {
                "interval": f"{draw(st.integers(1, 120))}s",
                "failureLimit": draw(st.integers(1, 3)),
                "metrics": metrics,
            },
            "progressDeadlineSeconds": draw(st.integers(1, 600)),
            "skipAnalysis": draw(st.booleans()),
            "webhooks": webhooks,
        }
    )


# What a webhook answers: an HTTP status code, or None (no answer).
answers = st.sampled_from([200, 204, 403, 500, None])

# A measured value per metric: in range (mostly), out of range, no data, or a query error.
outcomes = st.sampled_from(["pass"] * 8 + ["fail", "none", "error"])

# Weighted by repetition: rollouts need many ticks, settles and measurements to get anywhere.
events = st.one_of(
    *[st.tuples(st.just("tick"), st.integers(0, 400))] * 6,
    *[st.tuples(st.just("settle"), st.just(None))] * 3,
    *[st.tuples(st.just("propagate"), st.just(None))] * 3,
    *[st.tuples(st.just("measure"), st.lists(outcomes, min_size=2, max_size=2))] * 6,
    st.tuples(st.just("unready"), st.sampled_from(["stable", "canary"])),
    st.tuples(st.just("revision"), st.sampled_from(REVISIONS)),
    st.tuples(st.just("promote"), st.just(None)),
    st.tuples(st.just("request"), st.sampled_from(sorted(REQUESTS))),
    st.tuples(st.just("toggle-pause"), st.just(None)),
    st.tuples(st.just("route-broken"), st.booleans()),
    *[st.tuples(st.just("answer"), st.tuples(st.sampled_from(list(WebhookType)), answers))] * 2,
)


def measurement(metric: str, outcome: str) -> Measurement:
    values = {"pass": 0.5, "fail": 7.0, "none": None, "error": None}
    return Measurement(metric, values[outcome], "boom" if outcome == "error" else None)


@dataclass
class World:
    """A fake cluster that applies the engine's actions. While its route is broken, the route
    cannot be read, and a route write fails and ends the reconcile's actions (as the
    reconciler does on a RoutingError). A route write reaches the data plane (`applied`)
    only when it propagates, some events later, as a real gateway applies it seconds after
    the write; until then requests still follow what was applied before."""

    now: datetime = T0
    target: str = "v1"
    # The copies, one per revision; the revisions of each role as the last status said
    # (what the reconciler observes the copies by), and of the copies it retires; the
    # revision whose copy each of tidegate's Services selects.
    copies: dict[str, WorkloadState] = field(default_factory=dict)
    roles: dict[str, str | None] = field(default_factory=lambda: {"stable": None, "canary": None})
    retiring: list[str] = field(default_factory=list)
    selects: dict[str, str | None] = field(default_factory=lambda: {"stable": None, "canary": None})
    traffic: Traffic = STABLE_ONLY
    applied: Traffic = STABLE_ONLY  # what the data plane routes by
    route_broken: bool = False
    requests: dict[str, str] = field(default_factory=dict)  # annotation -> who asked
    # What each type's webhook answers; the kill switch says no until a script says yes.
    answers: dict[WebhookType, int | None] = field(
        default_factory=lambda: {t: 404 if t is WebhookType.ROLLBACK else 200 for t in WebhookType}
    )

    def call(self, spec: RolloutSpec, status: RolloutStatus) -> tuple[WebhookOutcome, ...] | None:
        """The webhooks the engine says are due, called."""
        due = due_webhooks(spec, status, self.now)
        return tuple(WebhookOutcome(h.name, self.answers[h.type]) for h in due) or None

    def observe(
        self,
        measurements: tuple[Measurement, ...] | None = None,
        webhooks: tuple[WebhookOutcome, ...] | None = None,
    ) -> Observation:
        return Observation(
            now=self.now,
            generation=1,
            target_revision=self.target,
            target_replicas=REPLICAS,
            stable=self.copy_of("stable"),
            canary=self.copy_of("canary"),
            selected=Selection(**self.selects),
            retiring={r: self.copies.get(r) for r in self.retiring},
            requests=dict(self.requests),
            measurements=measurements,
            traffic=None if self.route_broken else self.traffic,
            traffic_applied=self.applied == self.traffic,
            webhooks=webhooks,
        )

    def copy_of(self, role: str) -> WorkloadState | None:
        revision = self.roles[role]
        return self.copies.get(revision) if revision is not None else None

    def happen(self, kind: str, arg: Any) -> None:
        """What the cluster or a user does between reconciles."""
        if kind == "tick":
            self.now += timedelta(seconds=arg)
        elif kind == "settle":
            for revision, current in self.copies.items():
                self.copies[revision] = replace(current, ready=True)
        elif kind == "propagate":
            self.applied = self.traffic
        elif kind == "unready":
            current = self.copy_of(arg)
            if current is not None and current.revision is not None:
                self.copies[current.revision] = replace(current, ready=False)
        elif kind == "revision":
            self.target = arg
        elif kind == "promote":
            self.requests[PROMOTE_ANNOTATION] = "alice"
        elif kind == "request":
            self.requests[REQUESTS[arg]] = "alice"
        elif kind == "route-broken":
            self.route_broken = arg
        elif kind == "answer":
            self.answers[arg[0]] = arg[1]

    def apply(self, decision: Decision) -> None:
        self._carry_out(decision)
        status = decision.status
        self.roles = {"stable": status.stable_revision, "canary": status.canary_revision}
        self.retiring = list(status.retiring)
        # (Routes that drifted, or that a failed write left behind, are the engine's to put
        # back: its decision says so, first of all.)

    def _carry_out(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, SetTraffic):
                if self.route_broken:
                    return
                self.traffic = action.traffic
            elif isinstance(action, EnsureWorkload):
                current = self.copies.get(action.revision)
                if current is None or current.replicas != action.replicas:
                    wanted = WorkloadState(action.revision, action.replicas, ready=False)
                    self.copies[action.revision] = wanted
            elif isinstance(action, ScaleWorkload):
                status = decision.status
                of_role = (
                    status.stable_revision if action.role == "stable" else status.canary_revision
                )
                if of_role in self.copies:
                    self.copies[of_role] = replace(self.copies[of_role], replicas=action.replicas)
            elif isinstance(action, PointService):
                self.selects[action.role] = action.revision
            elif isinstance(action, RemoveCopy):
                assert action.revision not in self.selects.values(), "removed a copy in use"
                self.copies.pop(action.revision, None)
            elif isinstance(action, ClearRequest):
                del self.requests[action.annotation]


def assert_no_request_meets_an_empty_copy(world: World) -> None:
    """What the data plane routes by never sends a request to a copy scaled to zero."""
    applied = world.applied
    behind = {r: world.copies.get(r) if r else None for r in world.selects.values()}
    canary, stable = behind[world.selects["canary"]], behind[world.selects["stable"]]
    if applied.canary_weight > 0 or applied.header_route:
        assert canary is not None and canary.replicas > 0, (
            f"the gateway sends {applied.describe()} to a canary Service with no pods"
        )
    if applied.canary_weight < 100 and world.selects["stable"] is not None:
        assert stable is not None and stable.replicas > 0, (
            "the gateway sends requests to a stable Service with no pods"
        )


def stored(status: RolloutStatus) -> RolloutStatus:
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return RolloutStatus.model_validate(wire)


def required_passes(spec: RolloutSpec) -> dict[str, int]:
    """Passing measurement sets each analysed part of the rollout needs before it may be
    promoted, keyed by the stage they belong to (a canary step index, or a blue/green
    stage), from the spec alone."""
    if spec.skip_analysis or not spec.analysis.metrics:
        return {}
    needed: dict[str, int] = {}
    if spec.strategy.canary is not None:
        for index, step in enumerate(expand_steps(spec.strategy.canary)):
            if step.set_weight is not None:
                needed[f"step {index}"] = 1
            elif step.analysis is not None:
                needed[f"step {index}"] = step.analysis.iterations
        return needed
    blue_green = spec.strategy.blue_green
    assert blue_green is not None
    if blue_green.pre_promotion_analysis is not None:
        needed["Preview"] = blue_green.pre_promotion_analysis.iterations
    if blue_green.post_promotion_analysis is not None:
        needed["Switched"] = blue_green.post_promotion_analysis.iterations
    return needed


def said_yes(
    spec: RolloutSpec, type_: WebhookType, outcomes: tuple[WebhookOutcome, ...] | None
) -> bool:
    """Whether every webhook of that type answered 2xx in these outcomes (none: vacuous)."""
    codes = {o.webhook: o.code for o in outcomes or ()}
    return all(
        h.name in codes and (codes[h.name] or 0) // 100 == 2 for h in spec.webhooks_of(type_)
    )


def stage(spec: RolloutSpec, status: RolloutStatus) -> str:
    if spec.strategy.canary is not None:
        return f"step {status.current_step_index or 0}"
    return status.current_step_name or ""


def assert_idle_is_quiet(spec: RolloutSpec, status: RolloutStatus, world: World) -> None:
    stable, canary = world.copy_of("stable"), world.copy_of("canary")
    if (
        status.phase in STEADY_PHASES
        and world.target == status.stable_revision
        and stable is not None
        and stable.ready
        and (stable.revision, stable.replicas) == (status.stable_revision, REPLICAS)
        and not world.route_broken
        and world.applied == world.traffic
        and (canary is None or canary.replicas == 0)
        and not status.retiring
        and world.selects["stable"] == status.stable_revision
    ):
        again = reconcile(spec, stored(status), world.observe())
        assert again.actions == ()
        assert again.status == status
        assert again.requeue_after is None


@settings(max_examples=500, deadline=None)
@given(
    base_spec=specs(),
    script=st.lists(events, min_size=10, max_size=120),
    first_answers=st.dictionaries(st.sampled_from(list(WebhookType)), answers),
)
def test_invariants_hold_on_every_decision(
    base_spec: RolloutSpec,
    script: list[tuple[str, Any]],
    first_answers: dict[WebhookType, int | None],
) -> None:
    paused_spec = base_spec.model_copy(update={"paused": True})
    blue_green = base_spec.strategy.blue_green is not None
    paused = False
    world = World()
    world.answers.update(first_answers)
    status = RolloutStatus()
    needed = required_passes(base_spec)
    passes: dict[str, int] = {}
    rollout_key: tuple[object, ...] | None = None
    # The rollouts (revision, start) whose preRollout webhooks all answered 2xx.
    pre_rollout_passed: set[tuple[object, ...]] = set()

    # Most scripts should exercise a rollout: start from v1 and ask for v2 right away.
    prefix: list[tuple[str, Any]] = [("settle", None)] * 3 + [("revision", "v2")]
    for kind, arg in prefix + script:
        spec = paused_spec if paused else base_spec
        measurements: tuple[Measurement, ...] | None = None
        world.happen(kind, arg)
        if kind == "toggle-pause":
            paused = not paused
            spec = paused_spec if paused else base_spec
        elif kind == "measure" and needs_measurement(spec, status, world.now):
            measurements = tuple(
                measurement(m.name, outcome)
                for m, outcome in zip(spec.analysis.metrics, arg, strict=False)
            )

        key = (status.canary_revision, status.rollout_started_at)
        if key != rollout_key:
            rollout_key, passes = key, {}
        canary = world.copy_of("canary")
        canary_ready = (
            canary is not None and canary.ready and canary.revision == status.canary_revision
        )
        used_outcomes = arg[: len(spec.analysis.metrics)] if kind == "measure" else []
        if measurements is not None and canary_ready and all(o == "pass" for o in used_outcomes):
            where = stage(spec, status)
            passes[where] = passes.get(where, 0) + 1

        before, last_good = status.phase, status.stable_revision
        weight_before, key_before = status.canary_weight, key
        copies_before = set(world.copies)
        observed = world.observe(measurements, world.call(spec, status))
        if said_yes(spec, WebhookType.PRE_ROLLOUT, observed.webhooks):
            pre_rollout_passed.add(key)
        decision = reconcile(spec, stored(status), observed)
        world.apply(decision)
        status = decision.status

        assert stored(status) == status
        assert_no_request_meets_an_empty_copy(world)
        if any(isinstance(a, ScaleWorkload) and a.replicas == 0 for a in decision.actions):
            event("a copy was scaled to zero")
        if any(isinstance(a, RemoveCopy) for a in decision.actions):
            event("a copy that lost its role was removed")
        if any(isinstance(a, PointService) and a.role == "stable" for a in decision.actions):
            event("the stable Service was pointed")
        running = (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED)
        webhooks = observed.webhooks
        key_after = (status.canary_revision, status.rollout_started_at)
        if status.phase is RolloutPhase.SUCCEEDED and before is not RolloutPhase.SUCCEEDED:
            # The pointer flip: the stable Service is on the copy that was analysed, which
            # was there before (a promotion makes no copy of its own).
            assert world.selects["stable"] == status.stable_revision
            assert status.stable_revision in copies_before
        for action in decision.actions:
            if isinstance(action, EnsureWorkload) and action.role == "stable":
                # Only ever the copy of the stable revision (never the canary's revision
                # deployed a second time).
                assert action.revision == status.stable_revision
            if isinstance(action, EnsureWorkload) and action.role == "canary":
                # The new version gets no pod before its preRollout webhooks said yes.
                assert not spec.webhooks_of(WebhookType.PRE_ROLLOUT) or (
                    key_after in pre_rollout_passed
                ), "canary pods before the preRollout webhooks passed"
            if isinstance(action, SetTraffic) and action.traffic != STABLE_ONLY:
                # No traffic reaches a new version before its preRollout webhooks said yes.
                assert not spec.webhooks_of(WebhookType.PRE_ROLLOUT) or (
                    key_after in pre_rollout_passed
                ), "traffic before the preRollout webhooks passed"
        increased = status.canary_weight > weight_before
        if before in running and status.phase in running and key_before == key_after and increased:
            assert said_yes(spec, WebhookType.CONFIRM_TRAFFIC_INCREASE, webhooks), (
                "the weight increased while a confirmTrafficIncrease webhook refused"
            )
        rollback_codes = [o.code for o in webhooks or () if o.webhook == "h-rollback"]
        if before in running and any((c or 0) // 100 == 2 for c in rollback_codes):
            assert status.phase is RolloutPhase.FAILED, "a rollback webhook said yes"
        for action in decision.actions:
            if isinstance(action, SetTraffic):
                weight = action.traffic.canary_weight
                assert 0 <= weight <= 100
                assert 0 <= action.traffic.mirror_percent <= 100
                if action.restore:
                    # Drift put back: never other traffic than the status already names.
                    assert action.traffic == status_traffic(status)
                elif weight > 0:
                    # Live traffic only ever reaches a new version seen ready at full size.
                    seen = observed.canary
                    assert seen is not None and seen.ready and seen.replicas == REPLICAS
                    assert seen.revision == status.canary_revision
                if blue_green:
                    assert weight in (0, 100)  # one switch, never a split
                    assert not action.traffic.header_route and not action.traffic.mirror_percent
                    if weight == 100 and "Preview" in needed:
                        assert passes.get("Preview", 0) >= needed["Preview"], (
                            "green took live traffic before passing pre-promotion analysis"
                        )
        if status.phase in ENDED and before not in ENDED:
            # Every end of a rollout: all traffic on the last good version, no extra routes.
            ended_traffic = [a.traffic for a in decision.actions if isinstance(a, SetTraffic)]
            assert ended_traffic and ended_traffic[-1] == STABLE_ONLY
            assert status.canary_weight == 0 and not status.header_route
            assert status.mirror_percent == 0 and not status.preview_active
            if status.phase is not RolloutPhase.SUCCEEDED:
                assert status.stable_revision == last_good
            if not world.route_broken:
                assert world.traffic == STABLE_ONLY
        rolled_back = status.phase in (RolloutPhase.FAILED, RolloutPhase.ABORTED)
        if rolled_back and not world.route_broken:
            assert world.traffic == STABLE_ONLY
        # Every request is answered in the call that sees it (acted on, or refused with an
        # Event), except a promote waiting for the pause it is meant to end.
        cleared = {a.annotation for a in decision.actions if isinstance(a, ClearRequest)}
        reasons = {a.reason for a in decision.actions if isinstance(a, EmitEvent)}
        for annotation in observed.requests:
            if annotation != PROMOTE_ANNOTATION:
                assert annotation in cleared, f"{annotation} left unanswered"
        if ABORT_ANNOTATION in cleared and "Aborted" in reasons:
            assert status.phase is RolloutPhase.ABORTED
            assert before in (RolloutPhase.PROGRESSING, RolloutPhase.PAUSED, RolloutPhase.PROMOTING)
        skipped = "PromotedFully" in reasons
        if status.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED) and before in running:
            assert not spec.webhooks_of(WebhookType.PRE_ROLLOUT) or key in pre_rollout_passed
        if (
            status.phase in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)
            and before in running
            and not skipped
        ):
            assert said_yes(spec, WebhookType.CONFIRM_PROMOTION, webhooks), (
                "promoted while a confirmPromotion webhook refused"
            )
            for where, count in needed.items():
                assert passes.get(where, 0) >= count, (
                    f"promoted without {count} passing measurement(s) at {where}"
                )
        assert_idle_is_quiet(spec, status, world)
        if status.phase is not before:
            event(f"{'blue/green' if blue_green else 'canary'} reached {status.phase}")


bad_outcomes = st.sampled_from(["fail", "none", "error"])
bad_events = st.one_of(
    *[st.tuples(st.just("tick"), st.integers(0, 400))] * 3,
    *[st.tuples(st.just("measure"), st.lists(bad_outcomes, min_size=2, max_size=2))] * 3,
    st.tuples(st.just("settle"), st.just(None)),
    st.tuples(st.just("promote"), st.just(None)),
)


@settings(max_examples=300, deadline=None)
@given(spec=specs(), script=st.lists(bad_events, min_size=5, max_size=60))
def test_never_advances_past_an_analysed_step_without_passing_data(
    spec: RolloutSpec, script: list[tuple[str, Any]]
) -> None:
    needed = required_passes(spec)
    world = World()
    status = RolloutStatus()
    for kind, arg in [*[("settle", None)] * 3, ("revision", "v2"), *script]:
        measurements: tuple[Measurement, ...] | None = None
        world.happen(kind, arg)
        if kind == "measure" and needs_measurement(spec, status, world.now):
            measurements = tuple(
                measurement(m.name, o) for m, o in zip(spec.analysis.metrics, arg, strict=False)
            )
        decision = reconcile(spec, stored(status), world.observe(measurements))
        world.apply(decision)
        status = decision.status
        if needed and status.canary_revision == "v2":
            assert status.phase not in (RolloutPhase.PROMOTING, RolloutPhase.SUCCEEDED)
            if spec.strategy.canary is not None:
                first = min(int(k.split()[1]) for k in needed)
                assert (status.current_step_index or 0) <= first
            elif "Preview" in needed:
                assert world.traffic.canary_weight == 0  # green never went live
