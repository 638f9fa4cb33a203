"""Notifications, the pure part: which of a reconcile's happenings each rollout's
`spec.notifications` asks for, and the provider-neutral message that tells of one.

A reconcile's happenings are the engine's Events (by reason) and one thing the engine says
only through the status: a step began. `EVENT_REASONS` is the mapping docs/notifications.md
documents. Formatting for each provider is a module of its own (`slack`, `teams`, `webhook`);
`render` picks it. Delivery is an adapter's (`tidegate.adapters.notifications`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tidegate.api import (
    NotificationEvent,
    NotificationProvider,
    ProviderType,
    RolloutSpec,
    RolloutStatus,
)

SCHEMA_VERSION = "tidegate.io/notification/v1"

# The engine's Event reasons behind each notification event. `step` has none: it is a new
# status.stepStartedAt (a step began, and its traffic is routed).
EVENT_REASONS: Mapping[NotificationEvent, frozenset[str]] = {
    NotificationEvent.STARTED: frozenset({"RolloutStarted", "RolloutRestarted"}),
    NotificationEvent.STEP: frozenset(),
    NotificationEvent.PAUSED: frozenset({"AwaitingPromotion"}),
    NotificationEvent.PROMOTED: frozenset({"Promoted"}),
    NotificationEvent.CHECK_FAILED: frozenset({"CheckFailed"}),
    NotificationEvent.ROLLED_BACK: frozenset({"RolledBack"}),
    NotificationEvent.ABORTED: frozenset({"Aborted"}),
}
_BY_REASON = {reason: event for event, reasons in EVENT_REASONS.items() for reason in reasons}


@dataclass(frozen=True)
class Message:
    """One happening of one rollout, as every provider is told of it."""

    event: NotificationEvent
    reason: str  # the engine's Event reason ("StepStarted" for a step)
    namespace: str
    name: str
    phase: str | None
    stable_revision: str | None
    canary_revision: str | None
    step_index: int | None  # from 0
    step_name: str | None
    weight: int  # percent of the live traffic on the canary (or green)
    message: str
    time: datetime

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body: docs/notifications.md, schema SCHEMA_VERSION."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "event": self.event.value,
            "reason": self.reason,
            "rollout": {"namespace": self.namespace, "name": self.name},
            "phase": self.phase,
            "stableRevision": self.stable_revision,
            "canaryRevision": self.canary_revision,
            "step": None
            if self.step_index is None
            else {"index": self.step_index, "name": self.step_name},
            "weight": self.weight,
            "message": self.message,
            "time": self.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @property
    def title(self) -> str:
        return f"ProgressiveRollout {self.namespace}/{self.name}: {TITLES[self.event]}"

    def facts(self) -> list[tuple[str, str]]:
        """(name, value) pairs a chat card shows under the message."""
        step = "-" if self.step_index is None else f"{self.step_index + 1} ({self.step_name})"
        return [
            ("Phase", self.phase or "-"),
            ("Stable revision", self.stable_revision or "-"),
            ("Canary revision", self.canary_revision or "-"),
            ("Step", step),
            ("Canary weight", f"{self.weight}%"),
        ]


TITLES: Mapping[NotificationEvent, str] = {
    NotificationEvent.STARTED: "rollout started",
    NotificationEvent.STEP: "step started",
    NotificationEvent.PAUSED: "paused, awaiting promotion",
    NotificationEvent.PROMOTED: "promoted",
    NotificationEvent.CHECK_FAILED: "check failed",
    NotificationEvent.ROLLED_BACK: "rolled back",
    NotificationEvent.ABORTED: "aborted",
}

# Warning-like happenings, for the chat cards' colour.
BAD: frozenset[NotificationEvent] = frozenset(
    {NotificationEvent.CHECK_FAILED, NotificationEvent.ROLLED_BACK, NotificationEvent.ABORTED}
)


def happenings(
    old: RolloutStatus, new: RolloutStatus, events: Iterable[tuple[str, str]]
) -> list[tuple[NotificationEvent, str, str]]:
    """(event, reason, message) of what a reconcile did that a notification can tell of, in
    the order it happened: a rollout (re)started, then a step that began, then the engine's
    other Events (`events`: reason, message, in the engine's order)."""
    told = [(_BY_REASON[r], r, m) for r, m in events if r in _BY_REASON]
    found = [h for h in told if h[0] is NotificationEvent.STARTED]
    if new.step_started_at is not None and new.step_started_at != old.step_started_at:
        index = new.current_step_index or 0
        found.append(
            (
                NotificationEvent.STEP,
                "StepStarted",
                f"Step {index + 1} ({new.current_step_name or '-'}) of revision "
                f"{new.canary_revision}: canary weight {new.canary_weight}%",
            )
        )
    found.extend(h for h in told if h[0] is not NotificationEvent.STARTED)
    return found


def messages(
    spec: RolloutSpec,
    namespace: str,
    name: str,
    old: RolloutStatus,
    new: RolloutStatus,
    events: Sequence[tuple[str, str]],
    now: datetime,
) -> list[tuple[str, Message]]:
    """(provider, message) for each happening each of `spec.notifications` asks for."""
    wanted = spec.notifications or []
    if not wanted:
        return []
    found: list[tuple[str, Message]] = []
    for event, reason, text in happenings(old, new, events):
        message = message_of(event, reason, text, namespace, name, new, now)
        found.extend((n.provider, message) for n in wanted if event in n.events)
    return found


def message_of(
    event: NotificationEvent,
    reason: str,
    text: str,
    namespace: str,
    name: str,
    status: RolloutStatus,
    time: datetime,
) -> Message:
    """The message of one happening, told as of `status` (the status that decided it)."""
    return Message(
        event=event,
        reason=reason,
        namespace=namespace,
        name=name,
        phase=status.phase.value if status.phase is not None else None,
        stable_revision=status.stable_revision,
        canary_revision=status.canary_revision,
        step_index=status.current_step_index,
        step_name=status.current_step_name,
        weight=status.canary_weight,
        message=text,
        time=time,
    )


def render(provider: NotificationProvider, message: Message) -> dict[str, Any]:
    """The JSON body `provider` is sent for `message`."""
    from tidegate.notify import slack, teams, webhook

    if provider.type is ProviderType.SLACK:
        return slack.body(message)
    if provider.type is ProviderType.TEAMS:
        return teams.body(message, provider.format)
    return webhook.body(message)
