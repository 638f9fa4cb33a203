"""The generic JSON webhook: the message as it is (docs/notifications.md)."""

from __future__ import annotations

from typing import Any

from tidegate.notify import Message


def body(message: Message) -> dict[str, Any]:
    return message.to_json()
