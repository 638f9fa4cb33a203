"""Slack incoming webhooks: a text fallback and one attachment with the facts."""

from __future__ import annotations

from typing import Any

from tidegate.notify import BAD, Message


def body(message: Message) -> dict[str, Any]:
    return {
        "text": f"{message.title}\n{message.message}",
        "attachments": [
            {
                "color": "danger" if message.event in BAD else "good",
                "fields": [
                    {"title": name, "value": value, "short": True}
                    for name, value in message.facts()
                ],
                "ts": int(message.time.timestamp()),
            }
        ],
    }
