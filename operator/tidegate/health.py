"""The operator's /healthz and /readyz, answered from a thread of their own.

They are served apart from the event loop on purpose: a loop that is stuck (a blocking call
in a handler, a busy loop) cannot answer for itself, and an answer that merely times out
tells the kubelet nothing about why. Here the loop proves it runs by a heartbeat, a task
that notes the time every `HEARTBEAT_PERIOD`; the thread compares that with the clock.

- /healthz (liveness) fails once the loop has not beaten for `stuck_after` seconds: such a
  process does no work, and only a restart helps.
- /readyz (readiness) is ready once kopf has listed what the cache holds and the watches
  run, and stops being ready while the process cannot act: its loop lags by more than
  `lagging_after`, or the leader-election Lease has been unreadable for longer than a lease
  (the API server out of reach, the grant gone). A standby is ready as a warm spare.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEARTBEAT_PERIOD = 1.0
STUCK_AFTER = 30.0  # liveness: the chart's probe fails after three periods of 10 s as well
LAGGING_AFTER = 10.0


@dataclass
class Heartbeat:
    """When the event loop last ran the beating task, on `clock`."""

    clock: Callable[[], float] = time.monotonic
    period: float = HEARTBEAT_PERIOD
    last: float = field(init=False)

    def __post_init__(self) -> None:
        self.last = self.clock()

    def beat(self) -> None:
        self.last = self.clock()

    def silent_for(self) -> float:
        return max(0.0, self.clock() - self.last)

    async def run(self) -> None:
        """Beat every period until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(self.period)


@dataclass
class Verdict:
    ok: bool
    why: str


@dataclass
class HealthChecks:
    """What the probes judge by; each input is read from the server's thread.

    `started` is set once the watches run; `lease_unread_for` says for how long the Lease
    could not be read (0 when it can, or with no election).
    """

    heartbeat: Heartbeat
    started: Callable[[], bool]
    lease_unread_for: Callable[[], float] = lambda: 0.0
    lease_duration: float = float("inf")
    stuck_after: float = STUCK_AFTER
    lagging_after: float = LAGGING_AFTER

    def live(self) -> Verdict:
        silent = self.heartbeat.silent_for()
        if silent >= self.stuck_after:
            return Verdict(False, f"event loop stuck: no heartbeat for {silent:.0f}s")
        return Verdict(True, "ok")

    def ready(self) -> Verdict:
        if not self.started():
            return Verdict(False, "starting")
        silent = self.heartbeat.silent_for()
        if silent >= self.lagging_after:
            return Verdict(False, f"event loop lagging: no heartbeat for {silent:.0f}s")
        unread = self.lease_unread_for()
        if unread > self.lease_duration:
            return Verdict(False, f"the Lease unreadable for {unread:.0f}s")
        return Verdict(True, "ready")


class HealthServer:
    """/healthz and /readyz on `listen` (host:port, port 0 for any), in a daemon thread."""

    def __init__(self, listen: str, checks: HealthChecks) -> None:
        host, _, port = listen.rpartition(":")
        routes = {"/healthz": checks.live, "/readyz": checks.ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # (the name http.server calls)
                check = routes.get(self.path.split("?", 1)[0])
                verdict = check() if check else Verdict(False, "not found")
                status = 200 if verdict.ok else (503 if check else 404)
                body = verdict.why.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not news

        self._server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
