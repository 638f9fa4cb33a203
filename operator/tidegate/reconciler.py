"""One reconcile of one ProgressiveRollout: observe, ask the engine, apply, record.

All memory lives in the object's `.status`, read fresh each time, so any operator process
can pick a rollout up exactly where another one left it. Everything outside this process is
reached through `tidegate.ports`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from pydantic import ValidationError

from tidegate import (
    analysis,
    api,
    engine,
    failpoints,
    handback,
    metrics,
    outbox,
    slo,
    templates,
    validation,
)
from tidegate.durations import parse_duration
from tidegate.load_headers import with_secret_headers
from tidegate.notify import Message
from tidegate.ports import (
    CLAIM_ANNOTATION,
    HAND_BACK_FINALIZER,
    AdapterError,
    AutoscalerError,
    Autoscalers,
    EventType,
    LoadError,
    Obj,
    Ports,
    Router,
    TemplateError,
    WorkloadError,
    Workloads,
    role_service,
)
from tidegate.revisions import ReleaseUnknown, release_of, template_revision

# A failed reconcile is retried after 1, 2, 4 ... seconds, at most a minute apart.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


def backoff(failures: int) -> float:
    """Seconds before the next try after `failures` failed reconciles in a row."""
    doubled: float = BACKOFF_FIRST_SECONDS * 2.0 ** max(failures - 1, 0)
    return min(BACKOFF_MAX_SECONDS, doubled)


log = logging.getLogger("tidegate.reconciler")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def status_patch(old: Obj, new: Obj) -> Obj:
    """A JSON merge patch from one status to another (removed keys become null)."""
    return {**{k: None for k in old if k not in new}, **new}


Problem = tuple[str, str]  # (reason, message)


def _reported(status: Obj, problem: Problem) -> Obj | None:
    """The Degraded condition of `status` when it already reports `problem`."""
    for condition in status.get("conditions", []):
        said = (condition.get("type"), condition.get("status"))
        if (
            said == ("Degraded", "True")
            and (condition.get("reason"), condition.get("message")) == problem
        ):
            return dict(condition)
    return None


def with_problem(status: Obj, problem: Problem, now: str, meta: Obj, previous: Obj) -> Obj:
    """`status` with Degraded (and not Ready) for `problem`, as `previous` said it if it did
    (so the transition time holds still)."""
    if _reported(status, problem):
        return status
    reason, message = problem
    degraded = _reported(previous, problem) or {
        "type": "Degraded",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": meta.get("generation", 0),
    }
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    conditions["Degraded"] = degraded
    conditions["Ready"] = {**degraded, "type": "Ready", "status": "False"}
    return {**status, "conditions": list(conditions.values())}


def requests_of(rollout: Obj) -> dict[str, str]:
    """The requests annotated on the rollout: annotation -> who asked (its value, or
    "someone" when empty)."""
    annotations = rollout["metadata"].get("annotations") or {}
    return {
        key: str(annotations[key]).strip() or "someone"
        for key in api.REQUEST_ANNOTATIONS
        if key in annotations
    }


def _analysis_passed(
    measurements: tuple[analysis.Measurement, ...] | None, decision: engine.Decision
) -> bool:
    """Whether this reconcile measured and every metric passed."""
    if measurements is None:
        return False
    results = decision.status.metrics or []
    return bool(results) and all(r.phase is api.MetricPhase.PASSED for r in results)


async def _autoscale(
    autoscalers: Autoscalers,
    workloads: Workloads,
    source: Obj | None,
    status: api.RolloutStatus,
    canary_has_pods: bool,
) -> None:
    """The HPA copies as the spec and the phase want them. With spec.autoscalerRef: one for
    the stable copy, and one for the canary copy while it runs (created as a rollout starts,
    deleted once it ends and the canary is scaled away); without it, none. Each scales the
    copy of its role's revision."""
    for role in ("stable", "canary"):
        revision = status.stable_revision if role == "stable" else status.canary_revision
        runs = role == "stable" or engine.canary_runs(status)
        if source is not None and revision is not None and runs:
            await autoscalers.ensure(role, source, await workloads.copy_name(revision))
        elif source is not None and revision is not None and canary_has_pods:
            # A canary given up keeps its pods for the scale-down delay: its HPA copy stays
            # too. (A promoted one is the stable copy now, which the stable HPA copy scales.)
            pass
        else:
            await autoscalers.remove(role)


def _opens_wave(decision: engine.Decision) -> bool:
    """Whether this decision starts a release the regions before this one let through."""
    return any(
        isinstance(a, engine.EmitEvent) and a.reason == engine.WAVE_READY_EVENT
        for a in decision.actions
    )


def query_variables(
    spec: api.RolloutSpec, namespace: str, since_step: timedelta = timedelta(0)
) -> dict[str, str]:
    """Every name of api.QUERY_VARIABLES, and no other, for a metric's query or the load's
    URL. {{ window }} is the time since the step started, at least one interval."""
    interval = spec.analysis.interval
    seconds = max(int(since_step.total_seconds()), int(parse_duration(interval).total_seconds()), 1)
    return {
        "target": spec.target_ref.name,
        "namespace": namespace,
        "stableService": role_service(spec.service.name, "stable"),
        "canaryService": role_service(spec.service.name, "canary"),
        "interval": interval,
        "window": f"{seconds}s",
    }


def _degraded(status: Obj) -> bool:
    """Whether the engine's own status (wire form) says Degraded=True."""
    return any(
        c.get("type") == "Degraded" and c.get("status") == "True"
        for c in status.get("conditions", [])
    )


def _wire(status: api.RolloutStatus) -> Obj:
    dumped: Obj = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


@dataclass
class Known:
    """What this process remembers of one rollout between passes. None of it is the
    rollout's state (that is all in its .status): a new leader starts with none of it."""

    # What last kept its actions from being carried out.
    problem: Problem | None = None
    failures: int = 0  # failed reconciles in a row, for the backoff
    # Why the loadtester last did not take its load: reported (Degraded) while the rollout
    # goes on, until a job is taken or the rollout is over.
    load_problem: Problem | None = None
    # What is wrong with its spec.notifications providers, as last checked; and whether
    # they were checked at all.
    notify_problem: Problem | None = None
    notify_checked: bool = False
    # What could not be read at its last pass (a target, an HPA, a metric template),
    # reported while it lasts, and how many passes in a row.
    unread_problem: Problem | None = None
    unread_count: int = 0
    # Its resourceVersion as read, then as this process last wrote it: every status write
    # is conditional on it (fencing; see `patch_status`).
    version: str | None = None


class Reconciler:
    def __init__(
        self,
        ports: Ports,
        default_prometheus_url: str | None,
        clock: Clock = utc_now,
        *,
        default_loadtester_url: str | None = None,
    ) -> None:
        self.ports = ports
        self.default_prometheus_url = default_prometheus_url
        self.default_loadtester_url = default_loadtester_url
        self.clock = clock
        # What this process remembers of each rollout between passes.
        self._known: dict[tuple[str, str], Known] = {}

    def _of(self, key: tuple[str, str]) -> Known:
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = Known()
        return known

    async def reconcile(self, namespace: str, name: str) -> float | None:
        """Run one reconcile; return seconds until the next one is due (None: on change).

        Whatever a port fails at (a read or a write) is reported on the rollout as Degraded,
        with the port's reason and message and one Event, and tried again after a backoff.
        """
        began = time.monotonic()
        try:
            return await self._reconcile_once(namespace, name)
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - began)

    async def let_go(self, namespace: str) -> int:
        """The namespace is being deleted: its rollouts lose the hand-back finalizer
        (handback.let_go); how many still hold it."""
        return await handback.let_go(self, namespace)

    async def _reconcile_once(self, namespace: str, name: str) -> float | None:
        key = (namespace, name)
        rollout = await self.ports.rollouts.get(namespace, name)
        if rollout is None:
            self.ports.regions.forget(key)
            self._known.pop(key, None)
            return None
        version = rollout["metadata"].get("resourceVersion")
        if version is not None:
            self._of(key).version = str(version)
        stored: list[Obj] = [rollout.get("status") or {}]  # the status as last written
        try:
            if rollout["metadata"].get("deletionTimestamp"):
                delay = await handback.hand_back(self, rollout)
            else:
                delay = await self._reconcile(rollout, stored)
        except AdapterError as error:
            known = self._of(key)
            known.failures += 1
            if error.reason == "Conflict":
                # The object changed after it was read (a request, another replica's write):
                # nothing went wrong, the next pass decides on what is there now.
                log.info("%s/%s: %s; deciding again", namespace, name, error)
                return backoff(known.failures)
            known.problem = (error.reason, str(error))
            await self._refuse(rollout, stored[-1], error.reason, str(error))
            return backoff(known.failures)
        except Exception as error:
            # A bug, or input nothing foresaw: this rollout says so and is tried again after
            # a backoff; the other rollouts, and the process, go on. The traceback is logged
            # (once per kind of error), not put on the rollout.
            known = self._of(key)
            known.failures += 1
            problem = ("InternalError", f"an unexpected {type(error).__name__}; see the log")
            if known.problem != problem:
                log.exception("%s/%s: reconcile failed", namespace, name)
            known.problem = problem
            await self._refuse(rollout, stored[-1], *problem)
            return backoff(known.failures)
        self._of(key).failures = 0
        return delay

    async def _reconcile(self, rollout: Obj, stored: list[Obj]) -> float | None:
        meta = rollout["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        raw_status = stored[-1]

        def capabilities(spec: api.RolloutSpec) -> frozenset[str]:
            return self.ports.router(namespace, spec).capabilities

        parsed, problems = validation.spec_problems(rollout.get("spec"), capabilities)
        if parsed is None or problems:
            text = "; ".join(str(p) for p in problems)
            await self._refuse(rollout, raw_status, "InvalidSpec", f"invalid spec: {text}")
            return None
        spec = parsed
        try:
            status = api.RolloutStatus.model_validate(raw_status)
        except ValidationError as error:
            await self._refuse(rollout, raw_status, "InvalidStatus", f"unreadable status: {error}")
            return None
        if status.outbox is not None:
            # Left by a process that died after deciding and before telling: told first.
            await self._tell(rollout, spec, status, status, status.outbox, stored)
            raw_status = stored[-1]
            status = api.RolloutStatus.model_validate(raw_status)

        # The finalizer that makes a deletion wait for the hand-back, as spec.onDelete says.
        handing_back = spec.on_delete is api.OnDelete.HAND_BACK
        if (HAND_BACK_FINALIZER in (meta.get("finalizers") or [])) != handing_back:
            self.wrote(
                (namespace, name),
                await self.ports.rollouts.set_finalizer(rollout, HAND_BACK_FINALIZER, handing_back),
            )

        router = self.ports.router(namespace, spec)

        # What could not be read is an observation, not the end of the reconcile: the engine
        # still runs (abort, rollback webhooks, deadlines, a target gone mid-rollout), and
        # the problem is reported (Degraded, one Event) for as long as it lasts.
        unread: list[Problem] = []
        workloads = self.ports.workloads(namespace, name, spec)
        target = await workloads.target()
        if target is None:
            message = f"target Deployment {namespace}/{spec.target_ref.name} does not exist"
            if status.stable_revision is None:  # nothing adopted: nothing to decide yet
                raise WorkloadError(message, reason="TargetNotFound")
            unread.append(("TargetNotFound", message))
        else:
            await self._claim(workloads, target, namespace, name)
            await workloads.ensure_services(target)
        autoscalers = self.ports.autoscalers(namespace, name, spec)
        # Checked before anything is decided: a rollout never goes on as if there were none.
        autoscaler, autoscaler_read = None, True
        if spec.autoscaler_ref is not None:
            try:
                autoscaler = await autoscalers.source()
            except AutoscalerError as error:
                if status.stable_revision is None:  # not adopted without it
                    raise
                unread.append((error.reason, str(error)))
                autoscaler_read = False  # the copies stay as they are meanwhile
        target_revision = (
            template_revision(target["spec"]["template"])
            if target is not None
            else status.canary_revision or status.stable_revision or ""
        )
        waves = spec.waves
        target_release = None
        if target is not None:
            try:
                target_release = release_of(waves.release if waves else "template", target)
            except ReleaseUnknown as error:
                unread.append(("ReleaseUnknown", str(error)))
        regions = await self.ports.regions.read_all(
            (namespace, name), namespace, [*waves.after, *waves.before] if waves else []
        )
        asked_replicas = int(target["spec"].get("replicas", 1)) if target is not None else 0
        now = self.clock()
        started = time.monotonic()
        _, stable = await workloads.observe(status.stable_revision)
        _, canary = await workloads.observe(status.canary_revision)
        retiring = {r: (await workloads.observe(r))[1] for r in status.retiring}
        selected = await workloads.selection()
        held = await router.observe()
        applied = await router.applied()
        # Routing by the user's Service itself already keeps it on one version.
        isolated = "service" in router.capabilities or await workloads.service_isolated(
            selected.stable
        )
        # One answer names everything to observe besides the cluster before deciding.
        needs = engine.needs(spec, status, now, namespace, name)
        measurements = None
        judged = spec  # with each metric's template resolved, when this reconcile measures
        if needs.measure:
            try:
                judged, measurements = await self._measure(spec, status, namespace, now)
            except TemplateError as error:
                unread.append((error.reason, str(error)))  # the step waits, reported
        wave_measurements: dict[str, tuple[analysis.Measurement, ...]] = {}
        if needs.wave_regions:
            try:
                judged, wave_measurements = await self._measure_waves(
                    judged, needs.wave_regions, namespace
                )
            except TemplateError as error:
                unread.append((error.reason, str(error)))
        outcomes = await self._call_webhooks(needs.webhooks) if needs.webhooks else None
        observation = engine.Observation(
            now=now,
            generation=int(rollout["metadata"].get("generation", 0)),
            target_revision=target_revision,
            target_found=target is not None,
            target_replicas=asked_replicas or status.replicas or 1,
            stable=stable,
            canary=canary,
            selected=selected,
            retiring=retiring,
            requests=requests_of(rollout),
            measurements=measurements,
            traffic=held,
            traffic_applied=applied,
            service_isolated=isolated,
            target_running=asked_replicas > 0,
            webhooks=outcomes,
            target_release=target_release,
            regions=regions,
            wave_measurements=wave_measurements,
        )
        decision = engine.reconcile(judged, status, observation)
        if waves is not None and _opens_wave(decision):
            # Decided on what the watches said; a region that just went away may not have
            # been noticed yet. Asked again, and decided again if it says otherwise.
            confirmed = await self.ports.regions.confirm_all(namespace, waves.after)
            if any(regions.get(cluster) != read for cluster, read in confirmed.items()):
                observation = replace(observation, regions={**regions, **confirmed})
                decision = engine.reconcile(judged, status, observation)
        # The status first: an operator killed between the two resumes from what was decided
        # and finishes the actions (the route is put back to the status's weights), instead
        # of stepping the traffic back to what it had decided before. What the decision
        # tells goes with it, in the outbox, and is told after the writes.
        told = outbox.collect(judged, status, decision.status, decision.actions, now)
        if told is not None:
            decision.status.outbox = told
            decision.status.outbox_count = (decision.status.outbox_count or 0) + 1
        key = (namespace, name)
        new_status = _wire(decision.status)
        unread_problem = await self._unread(rollout, key, unread)
        problem = (
            self._of(key).problem or unread_problem or self._load_problem(key, decision.status)
        )
        if problem is None and not _degraded(new_status):
            # A rollout Degraded for its own reasons (rolled back) says so, not this.
            problem = self._of(key).notify_problem
        if problem is not None:
            # Still reported until the actions go through (or the loadtester or the
            # notifications' providers are fixed), so the status does not flap.
            new_status = with_problem(
                new_status, problem, self._timestamp(), rollout["metadata"], raw_status
            )
        if new_status != raw_status:
            await self.patch_status(namespace, name, status_patch(raw_status, new_status))
            stored.append(new_status)
            failpoints.after_status(told)
        strategy = "canary" if spec.strategy.canary is not None else "blueGreen"
        metrics.observe_rollout(
            namespace, name, strategy, raw_status, new_status, measurements is not None, now
        )
        # A failure from here on is retried: the engine asks for missing workloads again, and
        # the route is put back to the status's traffic, once what is wrong is fixed.
        # Events last: they tell what was done, and must not hold a route write up in the
        # queue for the API server when a thousand rollouts step at once.
        step_passed = _analysis_passed(measurements, decision)
        for action in decision.actions:
            if isinstance(action, engine.EmitEvent | engine.CallWebhooks):
                continue  # in the outbox, told below
            if isinstance(action, engine.DriveLoad):
                await self._drive_load(rollout, spec, decision, stored[-1], action.seconds)
                continue
            await self._apply(action, rollout, target, workloads, router, decision.status)
            if step_passed and isinstance(action, engine.SetTraffic):
                metrics.STEP_LATENCY.observe(time.monotonic() - started)
                step_passed = False
        scaled_away = engine.ScaleWorkload(role="canary", replicas=0) in decision.actions
        canary_has_pods = canary is not None and canary.replicas > 0 and not scaled_away
        if autoscaler_read:
            await _autoscale(autoscalers, workloads, autoscaler, decision.status, canary_has_pods)
        known = self._of(key)
        if known.problem is not None:
            known.problem = None
            cleared = _wire(decision.status)
            if known.notify_problem is not None and not _degraded(cleared):
                cleared = with_problem(
                    cleared, known.notify_problem, self._timestamp(), meta, raw_status
                )
            if unread_problem is not None:
                cleared = with_problem(cleared, unread_problem, self._timestamp(), meta, raw_status)
            await self.patch_status(namespace, name, status_patch(new_status, cleared))
            stored.append(cleared)
        if told is not None:
            await self._tell(rollout, spec, status, decision.status, told, stored)
        else:
            await self._notify(rollout, spec, status, decision.status, [], stored)
        if unread:
            # Looked at again as the watches report a change, and after a backoff anyway.
            known.unread_count += 1
            count = known.unread_count
            wait = backoff(count)
            return wait if decision.requeue_after is None else max(decision.requeue_after, wait)
        known.unread_count = 0
        return decision.requeue_after

    async def _unread(
        self, rollout: Obj, key: tuple[str, str], unread: list[Problem]
    ) -> Problem | None:
        """What could not be read this pass, as one problem to report (None: all was read);
        a Warning Event when it is new."""
        problem = (unread[0][0], "; ".join(text for _, text in unread)) if unread else None
        known = self._of(key)
        before, known.unread_problem = known.unread_problem, None
        if problem is not None:
            known.unread_problem = problem
            if problem != before:
                await self.event(rollout, "Warning", *problem)
        return problem

    async def _tell(
        self,
        rollout: Obj,
        spec: api.RolloutSpec,
        before: api.RolloutStatus,
        status: api.RolloutStatus,
        told: api.Outbox,
        stored: list[Obj],
    ) -> None:
        """Tell what the outbox holds (its Events, notifications and postRollout webhooks,
        these awaited), then write the status without it. `status` decided it, from
        `before`."""
        meta = rollout["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        for index, pending in enumerate(told.events):
            await self.event(
                rollout,
                pending.type,
                pending.reason,
                pending.message,
                name=outbox.event_name(name, told, index),
            )
        wanted = outbox.messages(spec, namespace, name, status, told)
        await self._notify(rollout, spec, before, status, wanted, stored)
        for webhook_type in told.webhooks:
            await self._report_webhooks(rollout, spec, status, webhook_type)
        current = stored[-1]
        if "outbox" in current:
            cleared = {k: v for k, v in current.items() if k != "outbox"}
            await self.patch_status(namespace, name, status_patch(current, cleared))
            stored.append(cleared)

    async def _notify(
        self,
        rollout: Obj,
        spec: api.RolloutSpec,
        old: api.RolloutStatus,
        new: api.RolloutStatus,
        wanted: list[tuple[str, Message]],
        stored: list[Obj],
    ) -> None:
        """Queue the notifications `wanted` (the notifier delivers in the background:
        nothing here waits for a provider). The providers are looked up when there is
        something to send, the spec changed, or this process has not looked yet; one that
        cannot be used is Degraded and an Event on the rollout."""
        meta = rollout["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = (namespace, name)
        spec_changed = old.observed_generation != meta.get("generation")
        if not spec.notifications:
            problem = None
        elif wanted or spec_changed or not self._of(key).notify_checked:
            self._of(key).notify_checked = True
            configs: dict[str, api.NotificationProvider] = {}
            problems: list[Problem] = []
            for notification in spec.notifications:
                try:
                    config = await self.ports.notifier.provider(notification.provider)
                except AdapterError as error:
                    problems.append((error.reason, str(error)))
                    continue
                if not config.allows(namespace):
                    problems.append(
                        (
                            "NotificationProviderNotAllowed",
                            f"notifications provider {notification.provider!r} may not be "
                            f"used by rollouts in namespace {namespace}",
                        )
                    )
                    continue
                configs[notification.provider] = config
            for provider, message in wanted:
                if provider in configs:
                    self.ports.notifier.send(provider, configs[provider], message)
            problem = (
                (problems[0][0], "; ".join(text for _, text in problems)) if problems else None
            )
        else:
            return  # nothing to send, nothing looked at
        known = self._of(key)
        before, known.notify_problem = known.notify_problem, None
        if problem is not None:
            known.notify_problem = problem
            if not _degraded(_wire(new)):
                await self._refuse(rollout, stored[-1], *problem)
            elif problem != before:  # the condition says why the rollout failed: an Event
                await self.event(rollout, "Warning", *problem)
        elif before is not None:
            current = stored[-1]
            await self.patch_status(namespace, name, status_patch(current, _wire(new)))

    async def _claim(self, workloads: Workloads, target: Obj, namespace: str, name: str) -> None:
        """Mark the target as this rollout's, unless another rollout that still exists has it."""
        claimant = target["metadata"].get("annotations", {}).get(CLAIM_ANNOTATION)
        if claimant == name:
            return
        if claimant:
            other = await self.ports.rollouts.get(namespace, claimant)
            if other is not None and not other["metadata"].get("deletionTimestamp"):
                raise WorkloadError(
                    f"Deployment {namespace}/{target['metadata']['name']} is already rolled out "
                    f"by ProgressiveRollout {namespace}/{claimant}",
                    reason="TargetClaimed",
                )
        await workloads.claim_target(target)

    async def _measure(
        self,
        spec: api.RolloutSpec,
        status: api.RolloutStatus,
        namespace: str,
        now: datetime,
    ) -> tuple[api.RolloutSpec, tuple[analysis.Measurement, ...]]:
        """The spec with every metric's template resolved, and a measurement of each metric.
        A metric whose template cannot be resolved raises TemplateError: nothing is
        measured, and the rollout waits (Degraded) until the template or the spec is fixed."""
        settings = spec.analysis
        if not settings.metrics and settings.slo is None:
            return spec, ()  # only rollout webhooks to check
        variables = query_variables(spec, namespace, now - (status.step_started_at or now))
        resolved = await self._resolve(
            settings.metrics, "spec.analysis.metrics", namespace, variables
        )
        judged = spec.model_copy(
            update={"analysis": settings.model_copy(update={"metrics": resolved})}
        )
        # The SLO's burn rates are measured with the metrics, and judged as metrics.
        queried = [*resolved, *slo.burn_metrics(settings.slo)]
        measured = await self._query(queried, settings.prometheus, variables)
        return judged, measured

    async def _query(
        self,
        resolved: list[api.Metric],
        provider: api.PrometheusProvider | None,
        variables: dict[str, str],
    ) -> tuple[analysis.Measurement, ...]:
        """A measurement of each resolved metric, from that Prometheus (else the default)."""
        url = (provider.address if provider else None) or self.default_prometheus_url
        if not url:
            return tuple(
                analysis.Measurement(
                    m.name,
                    None,
                    "no Prometheus address: set "
                    "spec.analysis.prometheus.address or the operator default",
                )
                for m in resolved
            )
        verify = not (provider and provider.insecure_skip_verify)
        return await self.ports.metrics.measure_all(url, resolved, variables, verify_tls=verify)

    async def _measure_waves(
        self, spec: api.RolloutSpec, due: tuple[str, ...], namespace: str
    ) -> tuple[api.RolloutSpec, dict[str, tuple[analysis.Measurement, ...]]]:
        """The spec with the due regions' metric templates resolved, and their metrics
        measured (each against its region's Prometheus)."""
        assert spec.waves is not None
        variables = query_variables(spec, namespace)
        regions, measured = [], {}
        for index, region in enumerate(spec.waves.after):
            if region.cluster in due:
                field = f"spec.waves.after[{index}].metrics"
                resolved = await self._resolve(region.metrics, field, namespace, variables)
                provider = region.prometheus or spec.analysis.prometheus
                measured[region.cluster] = await self._query(resolved, provider, variables)
                region = region.model_copy(update={"metrics": resolved})
            regions.append(region)
        waves = spec.waves.model_copy(update={"after": regions})
        return spec.model_copy(update={"waves": waves}), measured

    async def _resolve(
        self, metrics: list[api.Metric], field: str, namespace: str, variables: dict[str, str]
    ) -> list[api.Metric]:
        """Each metric as a query of its own: a template's (read from the cache) filled in
        with the metric's arguments and the rollout's variables; raises TemplateError."""
        resolved = []
        for index, metric in enumerate(metrics):
            ref = metric.template_ref
            found = None
            if ref is not None:
                found = await self.ports.templates.get(ref.kind, namespace, ref.name)
            try:
                resolved.append(
                    templates.resolve(
                        metric,
                        found,
                        variables,
                        namespace=namespace,
                        field=f"{field}[{index}]",
                    )
                )
            except templates.TemplateProblem as problem:
                raise TemplateError(problem.reason, str(problem)) from None
        return resolved

    async def _call_webhooks(
        self, webhooks: tuple[engine.WebhookCall, ...]
    ) -> tuple[engine.WebhookOutcome, ...]:
        """Each webhook called once, all at the same time."""
        calls = (self.ports.webhooks.call(c.webhook, c.body) for c in webhooks)
        return tuple(await asyncio.gather(*calls))

    async def _report_webhooks(
        self,
        rollout: Obj,
        spec: api.RolloutSpec,
        status: api.RolloutStatus,
        type_: api.WebhookType,
    ) -> None:
        """Call the webhooks of `type_` (postRollout), and tell each outcome in an Event.
        They decide nothing, but are awaited: the outbox that asked for them is cleared only
        once they were called."""
        meta = rollout["metadata"]
        webhooks = tuple(spec.webhooks_of(type_))
        body = partial(engine.webhook_body, namespace=meta["namespace"], name=meta["name"])
        calls = tuple(engine.WebhookCall(w, body(w, status=status)) for w in webhooks)
        outcomes = await self._call_webhooks(calls)
        now = self.clock()
        for webhook, outcome in zip(webhooks, outcomes, strict=True):
            result = engine.judge_webhook(webhook, outcome, now)
            if result.phase is api.WebhookPhase.PASSED:
                await self.event(rollout, "Normal", "WebhookCalled", result.message)
            else:
                await self.event(rollout, "Warning", "WebhookFailed", result.message)

    def _load_problem(self, key: tuple[str, str], status: api.RolloutStatus) -> Problem | None:
        """The loadtester's problem, while it matters: only as long as a rollout runs."""
        if status.phase in (api.RolloutPhase.PROGRESSING, api.RolloutPhase.PAUSED):
            return self._of(key).load_problem
        self._of(key).load_problem = None
        return None

    async def _drive_load(
        self,
        rollout: Obj,
        spec: api.RolloutSpec,
        decision: engine.Decision,
        written: Obj,
        seconds: float,
    ) -> None:
        """Hand the analysis's load to the loadtester. A loadtester that does not take it is
        reported (Degraded, one Event) and never holds anything else up: the measurements
        judge whatever traffic there is, and the next one asks again."""
        load = spec.analysis.load
        assert load is not None
        meta = rollout["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        key = (namespace, name)
        loadtester = load.loadtester or self.default_loadtester_url
        try:
            if not loadtester:
                raise LoadError(
                    "no loadtester address: set spec.analysis.load.loadtester or the "
                    "operator's --loadtester-url",
                    reason="LoadtesterUnavailable",
                )
            variables = query_variables(spec, namespace)
            load = await with_secret_headers(load, self.ports.secrets, namespace)
            await self.ports.load.drive(loadtester, f"{namespace}/{name}", load, seconds, variables)
        except LoadError as error:
            self._of(key).load_problem = (error.reason, str(error))
            await self._refuse(rollout, written, error.reason, str(error))
            return
        known = self._of(key)
        had, known.load_problem = known.load_problem, None
        if had is not None and known.problem is None:
            clean = _wire(decision.status)
            if clean != written:
                await self.patch_status(namespace, name, status_patch(written, clean))

    async def _apply(
        self,
        action: engine.Action,
        rollout: Obj,
        target: Obj | None,
        workloads: Workloads,
        router: Router,
        status: api.RolloutStatus,
    ) -> None:
        match action:
            case engine.SetTraffic(traffic=traffic, restore=restore):
                if await router.apply(traffic) and restore:
                    # Someone else (a GitOps sync, a hand edit) changed what tidegate owns.
                    log.warning(
                        "%s/%s: restored the routes (%s) they had drifted from",
                        *(rollout["metadata"][k] for k in ("namespace", "name")),
                        traffic.describe(),
                    )
            case engine.EnsureWorkload(revision=revision, replicas=replicas):
                await workloads.ensure(revision, replicas, target)
            case engine.ScaleWorkload(role=role, replicas=replicas):
                # The copy of the role's revision as the decision left it.
                of_role = status.stable_revision if role == "stable" else status.canary_revision
                if of_role is not None:
                    await workloads.scale(of_role, replicas)
            case engine.PointService(role=role, revision=revision):
                await workloads.point(role, revision)
            case engine.RemoveCopy(revision=revision, keep_template=keep):
                await workloads.remove(revision, keep)
            case engine.ParkCopy(revision=revision):
                await workloads.scale(revision, 0)
            case engine.RestoreTarget(revision=revision) if target is not None:
                # An undo: the target gets the template of the copy that runs `revision`.
                source, _ = await workloads.observe(revision)
                if source is None:
                    raise WorkloadError(f"no copy of revision {revision} is left to undo to")
                await workloads.restore_template(target, source)
            case engine.ReleaseTarget() if target is not None:
                await workloads.release_target(target)
            case engine.IsolateService(revision=revision):
                await workloads.isolate_service(revision)
            case engine.EmitEvent(type=type_, reason=reason, message=message):
                await self.event(rollout, type_, reason, message)
            case engine.ClearRequest(annotation=annotation):
                meta = rollout["metadata"]
                key = (meta["namespace"], meta["name"])
                self.wrote(
                    key,
                    await self.ports.rollouts.remove_annotation(*key, annotation),
                )

    async def patch_status(self, namespace: str, name: str, patch: Obj) -> None:
        """Write the status only if the rollout is still as this reconcile read it (or as
        this process last wrote it): a replica that lost the Lease while its write was on
        its way, or a decision made before a request arrived, fails with a Conflict instead
        of overwriting what is newer."""
        key = (namespace, name)
        written = await self.ports.rollouts.patch_status(
            namespace, name, patch, resource_version=self._of(key).version
        )
        self.wrote(key, written)

    def wrote(self, key: tuple[str, str], version: str | None) -> None:
        if version is not None:
            self._of(key).version = version

    async def _refuse(self, rollout: Obj, status: Obj, reason: str, message: str) -> None:
        """Record why nothing can be done: a Degraded condition and an Event, once per
        distinct problem. When not even that can be written, it is logged (once)."""
        meta = rollout["metadata"]
        degraded = with_problem(status, (reason, message), self._timestamp(), meta, status)
        if degraded == status:
            return
        try:
            await self.patch_status(meta["namespace"], meta["name"], status_patch(status, degraded))
        except AdapterError as error:
            log.warning(
                "%s/%s: %s: %s (and the status could not say so: %s)",
                meta["namespace"],
                meta["name"],
                reason,
                message,
                error,
            )
            return
        await self.event(rollout, "Warning", reason, message)

    def _timestamp(self) -> str:
        return self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    async def event(
        self,
        rollout: Obj,
        type_: EventType,
        reason: str,
        message: str,
        *,
        name: str | None = None,
    ) -> None:
        meta = rollout["metadata"]
        level = logging.WARNING if type_ == "Warning" else logging.INFO
        log.log(level, "%s/%s: %s: %s", meta["namespace"], meta["name"], reason, message)
        await self.ports.events.post(rollout, type_, reason, message, self._timestamp(), name)
