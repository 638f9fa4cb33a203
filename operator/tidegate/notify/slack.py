"""Slack incoming webhooks: a text fallback and one attachment with the facts."""

from __future__ import annotations

from typing import Any

from tidegate.notify import BAD, Message


def escape(text: str) -> str:
    """Text as Slack shows it literally: its control characters (&, <, >) escaped, so that
    a name or message from a rollout cannot make a link, a mention (<!channel>) or markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def body(message: Message) -> dict[str, Any]:
    return {
        "text": escape(f"{message.title}\n{message.message}"),
        "attachments": [
            {
                "color": "danger" if message.event in BAD else "good",
                "fields": [
                    {"title": escape(name), "value": escape(value), "short": True}
                    for name, value in message.facts()
                ],
                "ts": int(message.time.timestamp()),
            }
        ],
    }
