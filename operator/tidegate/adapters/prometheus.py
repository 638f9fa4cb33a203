"""Measurements from Prometheus: a metric's query, its variables filled in, run once.

The address is a tenant's to choose (spec.analysis.prometheus), so an answer is read as if
hostile: within QUERY_TIMEOUT_SECONDS in all (not per read: a server that drips a byte at a
time is cut off too), at most MAX_ANSWER_BYTES, and never repeated on the rollout (a refusal
is its status code). One host holds at most HOST_THREADS of the query threads at once (the
queries past it wait on the event loop, holding none), so that a host that answers slowly
cannot hold the threads every other rollout queries with.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter

from tidegate import api, metrics
from tidegate.adapters import threads
from tidegate.analysis import Measurement
from tidegate.templates import UnknownVariable as UnknownVariable
from tidegate.templates import render

QUERY_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
# An instant query that an analysis can use is one series: a few hundred bytes. Far more is
# a query that selects too much, or a server that is not Prometheus.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024
# Connections (each an HTTP session) kept for reuse; the least recently used is closed.
MAX_CONNECTIONS = 8
# An error's text is cut to this length for the status and the Event.
ERROR_TEXT_LIMIT = 1000


def render_query(query: str, variables: Mapping[str, str]) -> str:
    """The query with the rollout's variables filled in (raises UnknownVariable)."""
    return render(query, variables)


class AnswerRefused(Exception):
    """The answer was not read: too slow, too large, or not a success (its status code)."""


def read_bounded(raw: Any, deadline: float, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """An answer's body from urllib3's `raw` response: AnswerRefused once it passes `limit`
    bytes or `deadline` (time.monotonic()). read1 returns whatever one read of the socket
    gives, so the deadline is checked between every few bytes a slow server sends."""
    body = bytearray()
    while True:
        chunk = raw.read1(_CHUNK, decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            raise AnswerRefused(f"the answer is larger than {limit} bytes")
        if time.monotonic() > deadline:
            raise AnswerRefused(f"no whole answer within {QUERY_TIMEOUT_SECONDS:g}s")


class BoundedSession(requests.Session):
    """A requests session whose every answer is read by `read_bounded`; given to
    PrometheusConnect, which reads `response.json()` of what this returns."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + QUERY_TIMEOUT_SECONDS
        kwargs.update(
            stream=True,
            allow_redirects=False,
            timeout=(CONNECT_TIMEOUT_SECONDS, QUERY_TIMEOUT_SECONDS),
        )
        response = super().request(method, url, *args, **kwargs)
        try:
            if response.status_code != 200:
                # What the server said is not read: the code says it refused.
                raise AnswerRefused(f"Prometheus answered HTTP {response.status_code}")
            response._content = read_bounded(response.raw, deadline)
        except BaseException:
            response.close()  # the connection goes with what was not read of it
            raise
        response.raw.release_conn()  # read to its end: kept for the next query
        return response


# Query threads one host may hold at once: half of them, so that one host that answers
# slowly (or not at all) leaves the other half to every other host, the operator's own
# Prometheus included, which alone still has enough for 1,000 rollouts.
HOST_THREADS = max(1, threads.PROMETHEUS_THREADS // 2)
_host_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]]
_host_gates = weakref.WeakKeyDictionary()


def _host_gate(url: str) -> asyncio.Semaphore:
    """The semaphore of `url`'s host (with its port) on the running loop."""
    gates = _host_gates.setdefault(asyncio.get_running_loop(), {})
    host = urlsplit(url).netloc.lower()
    if host not in gates:
        gates[host] = asyncio.Semaphore(HOST_THREADS)
    return gates[host]


_connections: OrderedDict[tuple[str, bool], PrometheusConnect] = OrderedDict()


def _connection(url: str, verify_tls: bool) -> PrometheusConnect:
    """A connection to `url`, reused while it is among the few most recently used."""
    key = (url, verify_tls)
    if key in _connections:
        _connections.move_to_end(key)
        return _connections[key]
    session = BoundedSession()
    session.verify = verify_tls
    connection = PrometheusConnect(url=url, session=session, timeout=int(QUERY_TIMEOUT_SECONDS))
    # As many pooled connections as query threads (requests keeps 10), and no retries of
    # its own: a failed query is that interval's measurement, and the next interval asks
    # again, so a retry would only hold the thread.
    connection._session.mount(
        url, HTTPAdapter(pool_connections=1, pool_maxsize=threads.PROMETHEUS_THREADS, max_retries=0)
    )
    _connections[key] = connection
    while len(_connections) > MAX_CONNECTIONS:
        _, evicted = _connections.popitem(last=False)
        evicted._session.close()
    return connection


def _timed_query(connection: PrometheusConnect, query: str) -> list[dict[str, object]]:
    began = time.monotonic()
    try:
        result: list[dict[str, object]] = connection.custom_query(query=query)
        return result
    finally:
        metrics.METRIC_QUERY_DURATION.observe(time.monotonic() - began)


def single_value(result: list[dict[str, object]]) -> float | None:
    """One series gives its value; none, or a NaN (a rate over no requests), is no data."""
    if not result:
        return None
    if len(result) > 1:
        raise ValueError(f"the query returned {len(result)} series; aggregate it to one")
    sample = result[0].get("value")
    if not isinstance(sample, list) or len(sample) != 2:
        raise ValueError("the result is not an instant vector's sample")
    value = float(sample[1])
    return None if math.isnan(value) else value


async def measure(
    url: str, metric: api.Metric, variables: Mapping[str, str], verify_tls: bool = True
) -> Measurement:
    try:
        if metric.query is None:  # the reconciler resolves templates before it asks
            raise ValueError(f"metric {metric.name!r} has no query: its template is unresolved")
        query = render_query(metric.query, variables)
        connection = _connection(url, verify_tls)
        # The client's own HTTP timeout bounds the query once a thread runs it; a wait for
        # a free thread (or for the host's share of them) is not the query's fault, so it is
        # not counted against it.
        async with _host_gate(url):
            result = await threads.run_in(
                "prometheus", functools.partial(_timed_query, connection, query)
            )
        return Measurement(metric=metric.name, value=single_value(result))
    except Exception as error:  # every failure is an inconclusive measurement, never a pass
        text = f"{type(error).__name__}: {error}"
        if len(text) > ERROR_TEXT_LIMIT:
            text = text[: ERROR_TEXT_LIMIT - 1] + "…"
        return Measurement(metric=metric.name, value=None, error=text)


async def measure_all(
    url: str,
    metrics: Sequence[api.Metric],
    variables: Mapping[str, str],
    verify_tls: bool = True,
) -> tuple[Measurement, ...]:
    return tuple(await asyncio.gather(*(measure(url, m, variables, verify_tls) for m in metrics)))


class PrometheusMetrics:
    """The `Metrics` port on Prometheus' HTTP API."""

    async def measure_all(
        self,
        address: str,
        metrics: Sequence[api.Metric],
        variables: Mapping[str, str],
        *,
        verify_tls: bool = True,
    ) -> tuple[Measurement, ...]:
        return await measure_all(address, metrics, variables, verify_tls)
