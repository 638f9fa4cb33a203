"""The `LoadGenerator` port on the loadtester's HTTP API (`tidegate loadtester`): one job per
rollout, POSTed at the start of each analysis step and at each of its measurements."""

from __future__ import annotations

import os
from collections.abc import Mapping

import aiohttp

from tidegate import api
from tidegate.adapters.prometheus import UnknownVariable, render_query
from tidegate.ports import LoadError

REQUEST_TIMEOUT_SECONDS = 5.0
# The loadtester's bearer token (the Secret tidegate-loadtester-token, in both pods' env).
TOKEN_ENV = "TIDEGATE_LOADTESTER_TOKEN"


def job_body(
    job_id: str, load: api.Load, seconds: float, variables: Mapping[str, str]
) -> dict[str, object]:
    """The job as the loadtester takes it (`POST /jobs`), its URL rendered."""
    try:
        url = render_query(load.url, variables)
    except UnknownVariable as error:
        raise LoadError(f"spec.analysis.load.url: {error}", reason="InvalidSpec") from None
    return {
        "id": job_id,
        "url": url,
        "rate": load.rate,
        "duration": round(seconds, 3),
        "method": load.method,
        "headers": dict(load.headers),
    }


class LoadtesterClient:
    """POSTs jobs to loadtesters, through one connection pool (made on first use, in the
    operator's event loop)."""

    def __init__(self, timeout: float = REQUEST_TIMEOUT_SECONDS, token: str | None = None) -> None:
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers=headers
            )
        return self._session

    async def drive(
        self,
        loadtester: str,
        job_id: str,
        load: api.Load,
        seconds: float,
        variables: Mapping[str, str],
    ) -> None:
        body = job_body(job_id, load, seconds, variables)
        endpoint = f"{loadtester.rstrip('/')}/jobs"
        try:
            # The answer's body is never read: a loadtester URL is a tenant's to choose, so
            # what it says is neither held in memory nor repeated on the rollout. The status
            # code says whether the job was taken; the session's timeout bounds the whole call.
            async with self._client().post(endpoint, json=body, allow_redirects=False) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise LoadError(
                f"loadtester {loadtester} cannot be reached ({type(error).__name__})"
            ) from None
        if status >= 300:
            raise LoadError(
                f"loadtester {loadtester} refused the load for {job_id} (HTTP {status})",
                reason="LoadtesterRefused",
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
