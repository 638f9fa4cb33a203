"""A local HTTP server for webhooks, on a thread with its own event loop: `/<name>` answers
with the code the test set for that name (200 unless set), after the delay set for it, and
every request is recorded."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tidegate_devenv.cluster import free_port


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    name: str
    body: Any
    answer: int


class WebhookSink:
    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self.delays: dict[str, float] = {}
        self.received: list[Received] = []
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def calls(self, name: str) -> list[Received]:
        return [r for r in list(self.received) if r.name == name]

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.json()
        if name in self.delays:
            await asyncio.sleep(self.delays[name])
        code = self.answers.get(name, 200)
        self.received.append(Received(time.monotonic(), name, body, code))
        if 300 <= code < 400:
            return web.Response(status=code, headers={"Location": self.url("elsewhere")})
        return web.Response(status=code, text=f"{name} says {code}")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
