"""`tidegate loadtester`: sends requests at a steady rate on the operator's behalf, so that a
canary with little organic traffic is still measured (spec.analysis.load).

It runs in the cluster (deploy/loadtester), next to the Services it sends to. The operator
POSTs one job per rollout at the start of each analysis step and at each measurement:

    POST /jobs   {"id": "shop-ns/shop", "url": "http://shop-canary.shop-ns.svc:80/",
                  "rate": 20, "duration": 9, "method": "GET", "headers": {}}

starts the job with that id, or replaces the one running (its rate, URL, method, headers,
and its end: `duration` seconds from now). A job stops by itself at its end, so the load of
an operator that died stops too. `--max-rate` and `--max-duration` bound what a job may ask
(beyond them: 400, saying which bound). `GET /jobs` lists the running jobs, `/healthz`
answers while the process serves, `/metrics` counts the requests sent, by job and code.

`--connect-to HOST:PORT` (a development and test aid, like curl's) sends every request to
that address instead of the URL's host, keeping the URL's Host header: a local gateway can
then play cluster DNS and kube-proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import math
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tidegate.api import LOAD_METHODS, MAX_LOAD_RATE

log = logging.getLogger("tidegate.loadtester")

DEFAULT_MAX_RATE = float(MAX_LOAD_RATE)
DEFAULT_MAX_DURATION = 3600.0
REQUEST_TIMEOUT_SECONDS = 10.0
# Requests of one job waiting for an answer; past it a tick sends nothing (counted as
# code="skipped"), so a target that stops answering does not pile connections up.
MAX_IN_FLIGHT = 256
# Jobs at once: one per rollout with analysis.load; past it a new job is refused (503).
DEFAULT_MAX_JOBS = 1000
# How much of a response is read (and dropped) before the connection is let go: the status
# code is what counts, and a canary that answers gigabytes must not fill this process.
MAX_RESPONSE_BYTES = 1024 * 1024
# The shared secret of the operator and the loadtester (from the Secret
# tidegate-loadtester-token): when set, only a request bearing it may submit or list jobs.
TOKEN_ENV = "TIDEGATE_LOADTESTER_TOKEN"
MAX_ID_LENGTH = 253
MAX_URL_LENGTH = 2048
MAX_JOB_BYTES = 64 * 1024  # a job's JSON: an id, a URL, a few headers


class JobRefused(ValueError):
    """A job this loadtester does not take; the message says why."""


@dataclass(frozen=True)
class JobSpec:
    id: str
    url: str
    rate: float
    duration: float
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise JobRefused(f"{name} must be a number, got {value!r}")
    if value <= 0:
        raise JobRefused(f"{name} must be greater than 0, got {value:g}")
    return float(value)


def parse_job(body: object, max_rate: float, max_duration: float) -> JobSpec:
    """A job from its JSON, within this loadtester's bounds (raises JobRefused)."""
    if not isinstance(body, dict):
        raise JobRefused("the body must be a JSON object")
    job_id, url = body.get("id"), body.get("url")
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= MAX_ID_LENGTH:
        raise JobRefused(f"id must be a string of 1-{MAX_ID_LENGTH} characters")
    if (
        not isinstance(url, str)
        or len(url) > MAX_URL_LENGTH
        or not url.startswith(("http://", "https://"))
    ):
        raise JobRefused(
            f"url must be an http:// or https:// URL of at most {MAX_URL_LENGTH} characters"
        )
    rate = _number(body, "rate")
    if rate > max_rate:
        raise JobRefused(f"rate {rate:g}/s is above this loadtester's --max-rate {max_rate:g}")
    duration = _number(body, "duration")
    if duration > max_duration:
        raise JobRefused(
            f"duration {duration:g}s is above this loadtester's --max-duration {max_duration:g}"
        )
    method = body.get("method", "GET")
    if method not in LOAD_METHODS:
        raise JobRefused(f"method must be one of {', '.join(LOAD_METHODS)}, got {method!r}")
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise JobRefused("headers must be an object of strings")
    return JobSpec(job_id, url, rate, duration, method, dict(headers))


@dataclass
class Job:
    spec: JobSpec
    deadline: float  # the event loop's clock
    sent: int = 0
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class _ConnectTo(AbstractResolver):
    """Resolves every host to one address (--connect-to); the URL, and so the Host header,
    stay as they are."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(self.host, self.port, family)
        return [{**result, "hostname": host, "port": self.port} for result in found]

    async def close(self) -> None:
        await self._resolver.close()


class Loadtester:
    def __init__(
        self,
        *,
        max_rate: float = DEFAULT_MAX_RATE,
        max_duration: float = DEFAULT_MAX_DURATION,
        max_jobs: int = DEFAULT_MAX_JOBS,
        connect_to: tuple[str, int] | None = None,
        token: str | None = None,
    ) -> None:
        self.max_rate = max_rate
        self.max_duration = max_duration
        self.max_jobs = max_jobs
        self.connect_to = connect_to
        self.token = token or None
        self.jobs: dict[str, Job] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loadtester_requests",
            'Requests sent, by job and status code (code="error": no answer; '
            '"skipped": not sent, too many waiting for an answer).',
            ["job", "code"],
            registry=self.registry,
        )
        self.running = Gauge(
            "loadtester_jobs_running", "Jobs sending requests now.", registry=self.registry
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = _ConnectTo(*self.connect_to) if self.connect_to else None
            connector = aiohttp.TCPConnector(limit=0, resolver=resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                auto_decompress=False,
            )
        return self._session

    def submit(self, spec: JobSpec) -> bool:
        """Start the job, or replace the running one of its id; True when it replaced one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.duration
        job = self.jobs.get(spec.id)
        if job is not None and job.task is not None and not job.task.done():
            job.spec, job.deadline = spec, deadline
            return True
        job = Job(spec, deadline)
        self.jobs[spec.id] = job
        job.task = asyncio.create_task(self._run(job), name=f"job {spec.id}")
        return False

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        self.running.inc()
        log.info("job %s: %s %s at %g/s", job.spec.id, job.spec.method, job.spec.url, job.spec.rate)
        next_at = loop.time()
        try:
            while loop.time() < job.deadline:
                if len(job.in_flight) < MAX_IN_FLIGHT:
                    request = asyncio.create_task(self._send(job.spec))
                    job.in_flight.add(request)
                    request.add_done_callback(job.in_flight.discard)
                    job.sent += 1
                else:
                    self.requests.labels(job.spec.id, "skipped").inc()
                # After a stall, go on at the rate instead of catching up in a burst.
                next_at = max(next_at + 1 / job.spec.rate, loop.time() - 1)
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            # Over once its last request has its answer (each has a timeout).
            await asyncio.gather(*job.in_flight, return_exceptions=True)
        finally:
            for request in job.in_flight:
                request.cancel()
            self.running.dec()
            if self.jobs.get(job.spec.id) is job:
                del self.jobs[job.spec.id]
            log.info("job %s ended after %d requests", job.spec.id, job.sent)

    async def _send(self, spec: JobSpec) -> None:
        try:
            async with self._client().request(
                spec.method, spec.url, headers=spec.headers
            ) as response:
                code = str(response.status)
                read = 0
                async for chunk in response.content.iter_chunked(64 * 1024):
                    read += len(chunk)
                    if read >= MAX_RESPONSE_BYTES:
                        break  # the rest is not read: the connection is closed, not reused
        except (aiohttp.ClientError, TimeoutError):
            code = "error"
        self.requests.labels(spec.id, code).inc()

    def describe(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        return [
            {
                "id": job.spec.id,
                "url": job.spec.url,
                "rate": job.spec.rate,
                "method": job.spec.method,
                "remainingSeconds": round(max(0.0, job.deadline - now), 3),
                "sent": job.sent,
            }
            for job in sorted(self.jobs.values(), key=lambda j: j.spec.id)
        ]

    # --- HTTP --------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        """401 unless the request bears the token (when there is one)."""
        if self.token is None:
            return None
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return None
        return web.json_response({"error": "a valid bearer token is required"}, status=401)

    async def _post_job(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        if request.content_length is not None and request.content_length > MAX_JOB_BYTES:
            return web.json_response({"error": "the job is too large"}, status=413)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body must be JSON"}, status=400)
        try:
            spec = parse_job(body, self.max_rate, self.max_duration)
        except JobRefused as error:
            return web.json_response({"error": str(error)}, status=400)
        if spec.id not in self.jobs and len(self.jobs) >= self.max_jobs:
            return web.json_response(
                {"error": f"{self.max_jobs} jobs run already; try again later"}, status=503
            )
        replaced = self.submit(spec)
        return web.json_response(
            {"id": spec.id, "replaced": replaced, "duration": spec.duration},
            status=200 if replaced else 201,
        )

    async def _get_jobs(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        return web.json_response({"jobs": self.describe()})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_JOB_BYTES)
        app.router.add_post("/jobs", self._post_job)
        app.router.add_get("/jobs", self._get_jobs)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def close(self) -> None:
        tasks = [job.task for job in self.jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets); an empty host is every address."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def serve(loadtester: Loadtester, listen: tuple[str, int]) -> None:
    runner = web.AppRunner(loadtester.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen[0] or "0.0.0.0", listen[1]).start()
    log.info("loadtester listening on %s:%d", listen[0] or "0.0.0.0", listen[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await loadtester.close()


def run_loadtester(
    *,
    listen: tuple[str, int],
    max_rate: float,
    max_duration: float,
    max_jobs: int = DEFAULT_MAX_JOBS,
    connect_to: tuple[str, int] | None,
    insecure_no_token: bool = False,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not insecure_no_token:
        # Whoever reaches it could make it send requests anywhere: not without a token.
        log.error(
            "no %s: set it (the Secret tidegate-loadtester-token), or pass "
            "--insecure-no-token for a loopback-only development setup",
            TOKEN_ENV,
        )
        return 2
    if token is None:
        log.warning("--insecure-no-token: anyone who reaches this loadtester may submit jobs")
    loadtester = Loadtester(
        max_rate=max_rate,
        max_duration=max_duration,
        max_jobs=max_jobs,
        connect_to=connect_to,
        token=token,
    )
    asyncio.run(serve(loadtester, listen))
    return 0
