"""The `Webhooks` port over HTTP(S) with aiohttp: one POST of a JSON body per call.

A 2xx answer is a yes, any other answer a no; redirects are not followed (a 3xx is a no).
Certificates are verified (the system's trust store). No retries: an unanswered call is that
interval's outcome, and the engine asks again at the next one.

A webhook's URL is a tenant's to choose: the answer's body is never read (its status code is
the answer), a call takes at most its timeout (which the API caps) in all, and each host has
a few connections of its own, so that one tenant's hung endpoint never leaves another's
calls waiting for a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from tidegate import api
from tidegate.durations import parse_duration
from tidegate.engine import WebhookOutcome

ERROR_TEXT_LIMIT = 1000
# Connections to one host at once (the calls past it wait for one, within their timeout);
# no limit across hosts.
CONNECTIONS_PER_HOST = 8
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
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=CONNECTIONS_PER_HOST),
            )
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
                return WebhookOutcome(webhook.name, response.status)
        except Exception as error:  # every failure is an unanswered call, never a yes
            return WebhookOutcome(webhook.name, None, error=_error_text(error, seconds))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
