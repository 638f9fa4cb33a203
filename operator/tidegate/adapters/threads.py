"""Worker threads for the blocking clients, one pool for each kind of call.

The official clients block, so their calls run in threads. asyncio's default pool has
min(32, CPUs + 4) threads — six on a 2-core machine — and with a thousand rollouts due
at once, queries and writes queued there for longer than their own timeouts. Each kind of
call gets a pool sized for the connections its client keeps, so a burst of Prometheus
queries never delays a route write and no call waits for a connection once it runs."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")

# Connections each client keeps open, and the threads that use them. Writes wait on the
# API server, not on this process: with a thousand rollouts stepping at once, 32 writes
# in flight left the rest queued here (step p99 9.9 s at N = 1,000 on the 2-core local
# environment), 128 halved that (4.3 s) for about 10 MiB more at the peak.
KUBE_THREADS = 128
PROMETHEUS_THREADS = 32

_pools: dict[str, ThreadPoolExecutor] = {}
_SIZES = {"kube": KUBE_THREADS, "prometheus": PROMETHEUS_THREADS}


def pool(kind: str) -> ThreadPoolExecutor:
    """The pool for `kind` ("kube" or "prometheus"), made on first use."""
    if kind not in _pools:
        _pools[kind] = ThreadPoolExecutor(_SIZES[kind], thread_name_prefix=f"tidegate-{kind}")
    return _pools[kind]


async def run_in(kind: str, function: Callable[[], _T]) -> _T:
    """`function()` in the pool for `kind`, with the caller's context (as to_thread does)."""
    call = functools.partial(contextvars.copy_context().run, function)
    return await asyncio.get_running_loop().run_in_executor(pool(kind), call)


def shutdown() -> None:
    """Wait for every call still running in a worker thread, then drop the pools. The
    operator calls this before giving up its Lease: a write still in flight must land
    before a standby may act."""
    while _pools:
        _, executor = _pools.popitem()
        executor.shutdown(wait=True)
