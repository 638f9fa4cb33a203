"""Local demo-app processes standing in for the pod templates of the fake cluster."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import tidegate_devenv
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.routing import DemoSpec

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
START_TIMEOUT = 15.0


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM the child when the gateway dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spare_command(host: str = "127.0.0.1", port: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tidegate_devenv.demoapp",
        "--spare",
        f"--host={host}",
        f"--port={port}",
    ]


def child_env() -> dict[str, str]:
    """Our environment, with the package importable even when it isn't installed."""
    env = dict(os.environ)
    root = str(Path(tidegate_devenv.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


@dataclass
class DemoProcess:
    key: str
    spec: DemoSpec
    address: str  # host:port, serving the app and its /metrics
    proc: asyncio.subprocess.Process
    unused_since: float | None = None

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


async def start_spare() -> asyncio.subprocess.Process:
    """A demo-app process that has started (imports done) and waits to be configured.

    Starting Python takes long enough, on a busy machine, for the pods of a new template
    to be Ready before their app is: a warm spare closes that gap, as a readiness probe would.
    """
    proc = await asyncio.create_subprocess_exec(
        *spare_command(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=child_env(),
        preexec_fn=_die_with_parent,
    )
    assert proc.stdout is not None
    try:
        json.loads(await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT))["spare"]
    except BaseException:
        await stop_process(proc)
        raise
    return proc


async def start_demoapp(
    key: str, spec: DemoSpec, spare: asyncio.subprocess.Process | None = None
) -> DemoProcess:
    """Configure a spare (or a new) demo app for `spec` and wait until it listens."""
    proc = spare if spare is not None and spare.returncode is None else await start_spare()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        config = {
            "version": spec.version,
            "error_rate": spec.error_rate,
            "latency_ms": spec.latency_ms,
        }
        proc.stdin.write(json.dumps(config).encode() + b"\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)
        address = str(json.loads(line)["listening"])
    except BaseException as exc:  # including cancellation: never leak the child
        await stop_process(proc)
        if isinstance(exc, TimeoutError | ValueError | KeyError):
            msg = f"demo app for {key} did not start (exit {proc.returncode})"
            raise RuntimeError(msg) from exc
        raise
    log.info("started demo app %s version=%s at %s (pid %d)", key, spec.version, address, proc.pid)
    return DemoProcess(key, spec, address, proc)


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    """Stop a demo app with the environment's one stopper, in a thread so the loop runs on
    (and reaps the child: hence reap=False)."""
    if proc.returncode is None:
        await asyncio.to_thread(stop_process_group, proc.pid, timeout, reap=False)
    await proc.wait()


class DemoPool:
    """One demo-app process per pod template, started on demand and stopped once no
    ready pod has used the template for ``grace`` seconds.

    ``spares`` warm processes wait for the next templates. One is enough for one rollout at a
    time; when several start new templates at once (side-by-side tests on one gateway), the
    ones past the spares start cold, which on a busy machine takes seconds, while the pods
    they stand for are already Ready and getting requests.
    """

    def __init__(
        self,
        grace: float = 10.0,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        spares: int = 1,
    ) -> None:
        self.grace = grace
        self._on_change = on_change
        self._clock = clock
        self._procs: dict[str, DemoProcess] = {}
        self._starting: dict[str, asyncio.Task[DemoProcess]] = {}
        self._wanted_spares = max(0, spares)
        self._spares: list[asyncio.Task[asyncio.subprocess.Process]] = []

    def keep_spare(self) -> None:
        """Have warm processes ready for the next templates."""
        while len(self._spares) < self._wanted_spares:
            self._spares.append(asyncio.ensure_future(start_spare()))

    async def _take_spare(self) -> asyncio.subprocess.Process | None:
        # The one furthest along: a finished start if there is one, else the oldest.
        ready = [t for t in self._spares if t.done()]
        candidates = ready or self._spares
        task = candidates[0] if candidates else None
        if task is not None:
            self._spares.remove(task)
        self.keep_spare()
        if task is None:
            return None
        try:
            return await task
        except Exception as exc:
            log.warning("spare demo app failed to start: %s", exc)
            return None

    @property
    def processes(self) -> Mapping[str, DemoProcess]:
        return self._procs

    async def ensure(self, key: str, spec: DemoSpec) -> DemoProcess:
        current = self._procs.get(key)
        if current is not None and current.alive:
            current.unused_since = None
            return current
        task = self._starting.get(key)
        if task is None:
            task = asyncio.ensure_future(self._start(key, spec))
            self._starting[key] = task
        # Shielded so that one cancelled request doesn't abort a start others wait on.
        return await asyncio.shield(task)

    async def _start(self, key: str, spec: DemoSpec) -> DemoProcess:
        try:
            old = self._procs.pop(key, None)
            if old is not None:
                log.warning("demo app %s exited with %s; restarting", key, old.proc.returncode)
            started = await start_demoapp(key, spec, await self._take_spare())
            self._procs[key] = started
            self._changed()
            return started
        finally:
            self._starting.pop(key, None)

    def mark_used(self, keys: set[str]) -> None:
        """Record which templates currently have ready pods."""
        now = self._clock()
        for key, proc in self._procs.items():
            if key in keys:
                proc.unused_since = None
            elif proc.unused_since is None:
                proc.unused_since = now

    async def reap(self) -> None:
        """Stop processes unused for longer than the grace period."""
        now = self._clock()
        expired = [
            p
            for p in self._procs.values()
            if p.unused_since is not None and now - p.unused_since >= self.grace
        ]
        for proc in expired:
            del self._procs[proc.key]
            log.info("stopping unused demo app %s (%s)", proc.key, proc.address)
        if expired:
            await asyncio.gather(*(stop_process(p.proc) for p in expired))
            self._changed()

    async def close(self) -> None:
        spares, self._spares = self._spares, []
        for task in spares:
            task.cancel()
        for spare in await asyncio.gather(*spares, return_exceptions=True):
            if isinstance(spare, asyncio.subprocess.Process):
                await stop_process(spare)
        starting = list(self._starting.values())
        for pending in starting:
            pending.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        procs = list(self._procs.values())
        self._procs.clear()
        await asyncio.gather(*(stop_process(p.proc) for p in procs), return_exceptions=True)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
