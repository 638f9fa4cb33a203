"""Measurements from Prometheus: a metric's query, its variables filled in, run once."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from prometheus_api_client import PrometheusConnect
from requests.adapters import HTTPAdapter

from tidegate import api, metrics
from tidegate.adapters import threads
from tidegate.analysis import Measurement
from tidegate.templates import UnknownVariable as UnknownVariable
from tidegate.templates import render

QUERY_TIMEOUT_SECONDS = 10.0
# Connections (each an HTTP session) kept for reuse; the least recently used is closed.
MAX_CONNECTIONS = 8
# An error's text is cut to this length for the status and the Event.
ERROR_TEXT_LIMIT = 1000


def render_query(query: str, variables: Mapping[str, str]) -> str:
    """The query with the rollout's variables filled in (raises UnknownVariable)."""
    return render(query, variables)


_connections: OrderedDict[tuple[str, bool], PrometheusConnect] = OrderedDict()


def _connection(url: str, verify_tls: bool) -> PrometheusConnect:
    """A connection to `url`, reused while it is among the few most recently used."""
    key = (url, verify_tls)
    if key in _connections:
        _connections.move_to_end(key)
        return _connections[key]
    connection = PrometheusConnect(
        url=url, disable_ssl=not verify_tls, timeout=int(QUERY_TIMEOUT_SECONDS)
    )
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
        raise ValueError(f"unexpected result {result[0]!r}")
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
        # a free thread is not the query's fault, so it is not counted against it.
        result = await threads.run_in(
            "prometheus", functools.partial(_timed_query, connection, query)
        )
        return Measurement(metric=metric.name, value=single_value(result))
    except Exception as error:  # every failure is a failed measurement, never a pass
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
