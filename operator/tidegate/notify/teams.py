"""Microsoft Teams incoming webhooks: the legacy MessageCard (Office 365 connectors), or an
Adaptive Card in a message (Workflows webhooks)."""

from __future__ import annotations

from typing import Any

from tidegate.api import TeamsFormat
from tidegate.notify import BAD, Message

RED, GREEN = "D13438", "2EB886"


def body(message: Message, format_: TeamsFormat) -> dict[str, Any]:
    if format_ is TeamsFormat.ADAPTIVE_CARD:
        return _adaptive_card(message)
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": message.title,
        "themeColor": RED if message.event in BAD else GREEN,
        "title": message.title,
        "text": message.message,
        "sections": [{"facts": [{"name": n, "value": v} for n, v in message.facts()]}],
    }


def _adaptive_card(message: Message) -> dict[str, Any]:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": message.title,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": "Attention" if message.event in BAD else "Good",
            },
            {"type": "TextBlock", "text": message.message, "wrap": True},
            {"type": "FactSet", "facts": [{"title": n, "value": v} for n, v in message.facts()]},
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }
