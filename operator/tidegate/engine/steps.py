"""A rollout under way: the plan's steps, each run once the new version is ready at the
step's size and the data plane applied its traffic, then analysed, held or paused."""

from __future__ import annotations

from datetime import datetime, timedelta

from tidegate.analysis import deciding, judge
from tidegate.api import (
    PROMOTE_ANNOTATION,
    MetricPhase,
    OnInconclusive,
    RolloutPhase,
    WebhookPhase,
    WebhookType,
)
from tidegate.engine import endings, gates, wave_gate
from tidegate.engine.call import Call
from tidegate.engine.model import (
    DriveLoad,
    PointService,
    ScaleWorkload,
    load_lease,
    split_weight,
    status_traffic,
)
from tidegate.plan import STABLE_ONLY, Analyse, AwaitPromotion, Hold, PlanStep, Traffic
from tidegate.slo import checked_metrics

_JUDGED = (MetricPhase.PASSED, MetricPhase.FAILED)


def start_rollout(call: Call, event_reason: str, note: str = "") -> None:
    st, rev = call.status, call.obs.target_revision
    st.phase = RolloutPhase.PROGRESSING
    st.canary_revision = rev
    st.canary_release = call.obs.target_release
    st.current_step_index = 0
    st.failed_checks = 0
    st.passed_checks = 0
    st.inconclusive_checks = 0
    st.inconclusive_pause = False
    st.rollout_started_at = call.now
    st.step_started_at = None
    st.next_measurement_at = None
    st.waiting_since = None
    st.metrics = []
    st.current_step_name = None
    st.webhooks = []
    st.pre_rollout_passed = False
    st.webhook_gate = None
    st.next_webhook_at = None
    call.started = True
    # The canary runs again: a scale-down decided before this call would undo that.
    st.canary_scale_down_at = None
    call.actions = [
        a for a in call.actions if not (isinstance(a, ScaleWorkload) and a.role == "canary")
    ]
    rollback_hooks = call.spec.webhooks_of(WebhookType.ROLLBACK)
    st.next_rollback_poll_at = call.now + call.interval if rollback_hooks else None
    call.route(STABLE_ONLY)
    call.event(
        "Normal",
        event_reason,
        f"Rolling out revision {rev} (stable is {st.stable_revision}{note})",
    )
    advance(call)


def progress(call: Call) -> None:
    st, target = call.status, call.obs.target_revision
    if call.spec.paused:
        st.phase = RolloutPhase.PAUSED
        call.say("PausedBySpec", "Rollout paused: spec.paused is true")
        return
    if target != st.canary_revision:
        if target == st.stable_revision:
            endings.cancel(call)
        else:
            wave_gate.start_or_wait(call, "RolloutRestarted")
        return
    st.phase = RolloutPhase.PROGRESSING
    advance(call)


def advance(call: Call) -> None:
    st = call.status
    rev, stable_rev = st.canary_revision, st.stable_revision
    assert rev is not None and stable_rev is not None
    call.heal("stable", call.obs.stable, stable_rev)
    steps = call.plan.steps
    while st.phase is RolloutPhase.PROGRESSING:
        index = st.current_step_index or 0
        if index >= len(steps):
            label = f"After step {len(steps)}/{len(steps)}"
            if gates.gate(call, WebhookType.PRE_ROLLOUT, label) and gates.gate(
                call, WebhookType.CONFIRM_PROMOTION, label
            ):
                endings.begin_promotion(call)
            return
        step = steps[index]
        st.current_step_name = step.name
        label = step_label(call, index, step)
        # The new version gets no pod before its preRollout webhooks said yes.
        if not gates.gate(call, WebhookType.PRE_ROLLOUT, label):
            return
        if not call.selects("canary", rev):
            # `<service>-canary` moves from another copy to the new one only while the
            # data plane sends it nothing (a rollout restarted mid-way first took the
            # traffic back).
            selected = call.obs.selected
            if selected is not None and selected.canary and not call.holds(STABLE_ONLY):
                wait_for_route(call, label, STABLE_ONLY)
                return
            call.emit(PointService("canary", rev))
        replicas = (
            call.obs.target_replicas if step.canary_replicas is None else step.canary_replicas
        )
        if call.pod_ratio:
            # The weight is the share of pods: the canary runs the step's part of them (one
            # at least, to be analysed, even at weight 0).
            replicas = max(call.split(step.traffic.canary_weight)[0], 1)
        call.heal("canary", call.obs.canary, rev, replicas)
        if not call.ready(call.obs.canary, rev, replicas):
            wait_for_canary(call, rev)
            return
        if status_traffic(st) != step.traffic:
            if not call.selects("canary", rev):
                call.say("WaitingForCanary", f"{label}: waiting for {call.service('canary')}")
                call.await_change()
                return
            if not gates.may_route(call, label, step):
                st.waiting_since = None  # held by a gate, not waiting on the cluster
                return
            if call.pod_ratio and step.traffic.canary_weight > 0 and not retired(call, label):
                return
            call.route(step.traffic)
            if call.pod_ratio:
                # Stable gives up the pods the canary took; Kubernetes takes a pod out of
                # the Service's endpoints as it begins to stop.
                call.heal("stable", call.obs.stable, stable_rev)
            st.waiting_since = call.now  # the wait for the data plane begins
        if not call.holds(step.traffic):
            wait_for_route(call, label, step.traffic)
            return
        st.waiting_since = None
        if not run_step(call, index, step):
            return
        st.current_step_index = index + 1
        st.step_started_at = None
        st.next_measurement_at = None
        st.passed_checks = 0
        st.inconclusive_checks = 0


def step_label(call: Call, index: int, step: PlanStep) -> str:
    """How the status names a step; with trafficRouting.podRatio, a weight also says the
    pods that carry it and the share they give."""
    name = step.name
    weight = step.traffic.canary_weight
    if call.pod_ratio and weight > 0:
        canary, stable = call.split(weight)
        name += f": {canary} of {canary + stable} pods, {split_weight(canary, stable)}%"
    return f"Step {index + 1}/{len(call.plan.steps)} ({name})"


def retired(call: Call, label: str) -> bool:
    """With trafficRouting.podRatio, the user's Service is about to select every copy: a
    copy that lost its role and still runs pods (the stable copy a promotion just
    replaced), and the user's own Deployment, go first, as they do while the Service
    selects stable alone."""
    running = sorted(r for r, w in call.obs.retiring.items() if w is not None and w.replicas)
    if running:
        what = f"the copy of {running[0]}"
    elif call.obs.target_running:
        # The user's Deployment, still running after adoption (its scale-down delay), holds
        # the new template once it changed: the Service would send its pods, which no step
        # sized and no analysis saw, a share of the requests.
        what = f"the pods of Deployment {call.spec.target_ref.name}"
    else:
        return True
    call.status.waiting_since = None
    call.say("WaitingForRetiring", f"{label}: waiting for {what} to go")
    call.await_change()
    return False


def wait_for_canary(call: Call, rev: str) -> None:
    st = call.status
    if st.waiting_since is None:
        st.waiting_since = call.now
    deadline = st.waiting_since + timedelta(seconds=call.spec.progress_deadline_seconds)
    if call.now >= deadline:
        endings.roll_back(
            call,
            "ProgressDeadlineExceeded",
            f"canary revision {rev} did not become ready within "
            f"{call.spec.progress_deadline_seconds}s",
        )
        return
    call.say("WaitingForCanary", f"Waiting for canary revision {rev} to become ready")
    call.wake_at(deadline)


def wait_for_route(call: Call, label: str, traffic: Traffic) -> None:
    """The routes are written (or being restored) but the data plane has not reported
    them applied: the step waits, within the progress deadline."""
    st = call.status
    if st.waiting_since is None:
        st.waiting_since = call.now
    seconds = call.spec.progress_deadline_seconds
    deadline = st.waiting_since + timedelta(seconds=seconds)
    if call.now >= deadline:
        endings.roll_back(
            call,
            "ProgressDeadlineExceeded",
            f"{label}: the data plane did not apply {traffic.describe()} within {seconds}s",
        )
        return
    written = call.obs.traffic == traffic
    what = "the gateway to apply" if written else "the routes to hold"
    if written and call.pod_ratio:
        what = "the Service's endpoints to hold the planned ready pods for"
    call.say("WaitingForRoute", f"{label}: waiting for {what} {traffic.describe()}")
    call.wake_at(deadline)


def run_step(call: Call, index: int, step: PlanStep) -> bool:
    """Run the current step, whose traffic the routes hold; True when it is complete."""
    st = call.status
    label = step_label(call, index, step)
    starting = st.step_started_at is None
    if st.step_started_at is None:
        st.step_started_at = call.now
        st.passed_checks = 0
        analysed = isinstance(step.wait, Analyse)
        st.next_measurement_at = call.now + call.interval if analysed else None
    match step.wait:
        case None:
            return True
        case Analyse(passes=passes):
            due = st.next_measurement_at
            done = analyse(call, label, passes)
            renew_load(call, starting or st.next_measurement_at != due, done)
            return done
        case Hold(duration=duration, reason=reason):
            return hold(call, label, st.step_started_at + duration, reason, step.name)
        case AwaitPromotion(timeout=timeout):
            return await_promotion(call, label, starting, timeout)
    raise AssertionError(f"unknown wait {step.wait!r}")


def renew_load(call: Call, renew: bool, done: bool) -> None:
    """Load for the analysis (spec.analysis.load): asked for as the step's analysis starts
    and at each measurement after which it goes on; never once it is over or paused."""
    if (
        renew
        and not done
        and call.spec.analysis.load is not None
        and call.status.phase is RolloutPhase.PROGRESSING
    ):
        call.emit(DriveLoad(load_lease(call.interval)))


def hold(call: Call, label: str, until: datetime, reason: str, what: str) -> bool:
    if call.now >= until:
        return True
    call.say(reason, f"{label}: {what} until {until.isoformat()}")
    call.wake_at(until)
    return False


def await_promotion(call: Call, label: str, starting: bool, timeout: timedelta | None) -> bool:
    if PROMOTE_ANNOTATION in call.obs.requests and PROMOTE_ANNOTATION not in call.answered:
        # (One request ends one pause, not the next one too.)
        who = call.answer(PROMOTE_ANNOTATION)
        call.event("Normal", "Resumed", f"{label}: promoted, asked by {who}")
        return True
    st = call.status
    assert st.step_started_at is not None
    until = None if timeout is None else st.step_started_at + timeout
    if until is not None and call.now >= until:
        call.event("Normal", "AutoPromoted", f"{label}: promoted after {timeout}")
        return True
    what = "paused until promoted" + ("" if until is None else f" or {until.isoformat()}")
    if starting:
        call.event("Normal", "AwaitingPromotion", f"{label}: {what}")
    st.phase = RolloutPhase.PAUSED
    call.say("AwaitingPromotion", f"{label}: {what}")
    if until is not None:
        call.wake_at(until)
    return False


def analyse(call: Call, label: str, required: int) -> bool:
    st = call.status
    if st.inconclusive_pause:
        return paused_inconclusive(call, label)
    due = st.next_measurement_at
    assert due is not None
    if call.now < due or call.obs.measurements is None:
        call.say(
            "Analysing",
            f"{label}: analysing at weight {st.canary_weight} "
            f"({st.passed_checks}/{required} checks passed)",
        )
        call.wake_at(due)
        return False
    by_metric = {m.metric: m for m in call.obs.measurements}
    verdicts = [
        judge(m, by_metric.get(m.name), call.now) for m in checked_metrics(call.spec.analysis)
    ]
    st.metrics = [v.result for v in verdicts]
    hooks = call.spec.webhooks_of(WebhookType.ROLLOUT)
    outcomes = {o.webhook: o for o in call.obs.webhooks or ()}
    checks = gates.record(
        call, [gates.judge_webhook(h, outcomes.get(h.name), call.now) for h in hooks]
    )
    decide = deciding(verdicts)
    failures = [v.result.message for v in decide if v.result.phase is MetricPhase.FAILED]
    failures += [c.message for c in checks if c.phase is WebhookPhase.FAILED]
    unjudged = [v.result.message for v in decide if v.result.phase not in _JUDGED]
    unjudged += [c.message for c in checks if c.phase is WebhookPhase.ERROR]
    if failures:
        st.inconclusive_checks = 0
        st.failed_checks += 1
        limit = call.spec.analysis.failure_limit
        text = f"{failures[0]} (failure {st.failed_checks} of limit {limit})"
        if st.failed_checks >= limit:
            endings.roll_back(call, "AnalysisFailed", text)
            return False
        call.event("Warning", "CheckFailed", f"{label}: {text}")
    elif unjudged:
        # Nothing to judge (no data, NaN, a failed query): the step holds, and only a run
        # of these, with nothing conclusive between them, gives up.
        st.inconclusive_checks += 1
        limit = call.spec.analysis.inconclusive_limit
        text = f"{unjudged[0]} (inconclusive {st.inconclusive_checks} in a row of limit {limit})"
        if st.inconclusive_checks >= limit:
            if call.spec.analysis.on_inconclusive is OnInconclusive.PAUSE:
                st.inconclusive_pause = True
                call.event("Warning", "AnalysisInconclusive", f"{label}: {text}; paused")
                return paused_inconclusive(call, label)
            endings.roll_back(call, "AnalysisInconclusive", text)
            return False
        call.event("Warning", "CheckInconclusive", f"{label}: {text}")
    else:
        st.inconclusive_checks = 0
        st.passed_checks += 1
        if st.passed_checks >= required:
            return True
    st.next_measurement_at = call.now + call.interval
    call.say(
        "Analysing",
        f"{label}: analysing at weight {st.canary_weight} "
        f"({st.passed_checks}/{required} checks passed, {st.failed_checks} failed)",
    )
    call.wake_at(st.next_measurement_at)
    return False


def paused_inconclusive(call: Call, label: str) -> bool:
    """Paused after too many inconclusive checks (onInconclusive: Pause): a promote
    analyses the step again; an abort rolls back."""
    st = call.status
    if PROMOTE_ANNOTATION in call.obs.requests and PROMOTE_ANNOTATION not in call.answered:
        who = call.answer(PROMOTE_ANNOTATION)
        st.inconclusive_pause = False
        st.inconclusive_checks = 0
        st.next_measurement_at = call.now + call.interval
        call.event("Normal", "Resumed", f"{label}: analysing again, asked by {who}")
        call.say("Analysing", f"{label}: analysing again at weight {st.canary_weight}")
        call.wake_at(st.next_measurement_at)
        return False
    st.phase = RolloutPhase.PAUSED
    call.say(
        "AnalysisInconclusive",
        f"{label}: paused after {st.inconclusive_checks} inconclusive checks in a row; "
        "promote to analyse again, abort to roll back",
    )
    return False
