"""The outbox: what a reconcile decided to tell, kept in the status until it is told.

Events, notifications and postRollout webhooks tell of a decision; they must neither be lost
when the operator dies between writing the status and telling, nor be told before the
status that decided them is written. So a decision's tellings go into `status.outbox` with
the status write itself; they are told after the decision's writes, and the outbox is then
cleared by one more status write. A process that finds an outbox left behind tells it first.

Telling twice is made harmless where it can be: each Event is named from the outbox's id
and its place in it, so a second post of the same Event is refused by the API server.

Pure: no I/O; the reconciler does the telling.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tidegate import notify
from tidegate.api import (
    Outbox,
    PendingEvent,
    PendingNotification,
    RolloutSpec,
    RolloutStatus,
    WebhookType,
)
from tidegate.engine import Action, CallWebhooks, EmitEvent
from tidegate.notify import Message

# An Event's name is at most 253 characters: the rollout's name is cut to leave room.
_NAME_ROOM = 200


def collect(
    spec: RolloutSpec,
    old: RolloutStatus,
    new: RolloutStatus,
    actions: Sequence[Action],
    now: datetime,
) -> Outbox | None:
    """The outbox of a decision from `old` to `new`: its Events, the notifications
    spec.notifications asks for, the webhooks to call. None when there is nothing to tell."""
    events = [
        PendingEvent(type=a.type, reason=a.reason, message=a.message)
        for a in actions
        if isinstance(a, EmitEvent)
    ]
    wanted = {event for n in spec.notifications or () for event in n.events}
    told = notify.happenings(old, new, [(e.reason, e.message) for e in events])
    notifications = [
        PendingNotification(event=event, reason=reason, message=text)
        for event, reason, text in told
        if event in wanted
    ]
    webhooks: list[WebhookType] = [a.webhook_type for a in actions if isinstance(a, CallWebhooks)]
    if not (events or notifications or webhooks):
        return None
    # Unique for the rollout: its count of outboxes, and the time (should the status ever
    # be reset, the count starts again but the time has moved on).
    ident = f"{(new.outbox_count or 0) + 1:x}t{now:%y%m%d%H%M%S}"
    return Outbox(id=ident, at=now, events=events, notifications=notifications, webhooks=webhooks)


def event_name(rollout: str, outbox: Outbox, index: int) -> str:
    """The name of the outbox's `index`th Event (a DNS subdomain, as Event names are)."""
    return f"{rollout[:_NAME_ROOM]}.{outbox.id}.{index:x}"


def messages(
    spec: RolloutSpec, namespace: str, name: str, status: RolloutStatus, outbox: Outbox
) -> list[tuple[str, Message]]:
    """(provider, message) for each notification of the outbox, to every provider of
    spec.notifications that asks for its kind; told as of `status` (the status that
    decided them)."""
    found: list[tuple[str, Message]] = []
    for pending in outbox.notifications:
        message = notify.message_of(
            pending.event, pending.reason, pending.message, namespace, name, status, outbox.at
        )
        found.extend(
            (n.provider, message) for n in spec.notifications or () if pending.event in n.events
        )
    return found
