"""The `Webhooks` port over HTTP(S) with aiohttp: one POST of a JSON body per call.

A 2xx answer is a yes, any other answer a no; redirects are not followed (a 3xx is a no).
Certificates are verified (the system's trust store). No retries: an unanswered call is that
interval's outcome, and the engine asks again at the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from tidegate import api
from tidegate.durations import parse_duration
from tidegate.engine import WebhookOutcome

# How much of an answer's body is kept (for the status and the Event).
BODY_LIMIT = 1000
ERROR_TEXT_LIMIT = 1000
USER_AGENT = "tidegate-webhooks"


def _error_text(error: BaseException, timeout: float) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return f"no answer within {timeout:g}s"
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[: ERROR_TEXT_LIMIT - 1] + "…"


class HTTPWebhooks:
    """One connection pool per event loop, made on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
            self._loop = loop
        return self._session

    async def call(self, webhook: api.Webhook, body: Mapping[str, object]) -> WebhookOutcome:
        seconds = parse_duration(webhook.timeout).total_seconds()
        try:
            async with self._client().post(
                webhook.url,
                json=dict(body),
                timeout=aiohttp.ClientTimeout(total=seconds),
                allow_redirects=False,
            ) as response:
                said = await response.content.read(BODY_LIMIT)
                return WebhookOutcome(
                    webhook.name, response.status, body=said.decode("utf-8", errors="replace")
                )
        except Exception as error:  # every failure is an unanswered call, never a yes
            return WebhookOutcome(webhook.name, None, error=_error_text(error, seconds))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
