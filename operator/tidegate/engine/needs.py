"""What the engine needs before it can decide: which measurements, which regions' metrics
and which webhooks' outcomes the next call must be given. One question, one answer
(`needs()`), so the caller observes once and decides once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tidegate.api import RolloutPhase, RolloutSpec, RolloutStatus, Webhook, WebhookType
from tidegate.engine.model import current_step
from tidegate.plan import Analyse
from tidegate.strategies import plan_for
from tidegate.waves import regions_to_measure


@dataclass(frozen=True)
class WebhookCall:
    """A webhook to call before deciding, and the JSON body to POST (docs/api.md)."""

    webhook: Webhook
    body: dict[str, object]


@dataclass(frozen=True)
class Needs:
    """What to observe besides the cluster before the next `reconcile()`.

    measure: query the metrics (Observation.measurements);
    wave_regions: the regions under spec.waves.after whose metrics to query
    (Observation.wave_measurements);
    webhooks: the webhooks to call, each with its body (Observation.webhooks).
    """

    measure: bool
    wave_regions: tuple[str, ...]
    webhooks: tuple[WebhookCall, ...]


def needs(
    spec: RolloutSpec, status: RolloutStatus, now: datetime, namespace: str, name: str
) -> Needs:
    """What the next call of `reconcile(spec, status, ...)` at `now` must be given."""
    return Needs(
        measure=needs_measurement(spec, status, now),
        wave_regions=wave_measurements_due(spec, status, now),
        webhooks=tuple(
            WebhookCall(w, webhook_body(w, namespace, name, status))
            for w in due_webhooks(spec, status, now)
        ),
    )


def needs_measurement(spec: RolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """Whether the next reconcile should be given fresh measurements."""
    if spec.paused or status.phase != RolloutPhase.PROGRESSING:
        return False
    if status.step_started_at is None or status.next_measurement_at is None:
        return False
    step = current_step(plan_for(spec), status)
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
