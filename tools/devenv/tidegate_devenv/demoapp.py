"""A small versioned HTTP app standing in for the pods of the local cluster.

Every path answers with ``{"version": V}`` after a configurable latency, failing with
a 500 at a configurable rate, and ``/metrics`` exposes what a real app would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Relative jitter applied to the configured latency.
JITTER = 0.2


class DemoMetrics:
    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self.version = version
        self.requests = Counter(
            "demo_http_requests",
            "HTTP requests served, by status code.",
            ["version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "demo_http_request_duration_seconds",
            "Time spent serving HTTP requests.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, code: int, seconds: float) -> None:
        self.requests.labels(self.version, str(code)).inc()
        self.duration.labels(self.version).observe(seconds)


def build_app(
    version: str, error_rate: float, latency_ms: float, *, rng: random.Random | None = None
) -> web.Application:
    """The demo app as an aiohttp application (for in-process use and for ``main``)."""
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error rate must be within [0, 1], got {error_rate}")
    rand = rng or random.Random()
    metrics = DemoMetrics(version)
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": version})

    async def metrics_handler(_: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def serve(request: web.Request) -> web.Response:
        start = time.perf_counter()
        await request.read()
        delay = max(0.0, latency_ms * (1.0 + rand.uniform(-JITTER, JITTER))) / 1000.0
        if delay:
            await asyncio.sleep(delay)
        failed = rand.random() < error_rate
        code = 500 if failed else 200
        body: dict[str, str] = {"version": version}
        if failed:
            body["error"] = "injected failure"
        resp = web.json_response(body, status=code, headers={"X-Version": version})
        metrics.observe(code, time.perf_counter() - start)
        return resp

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        print(f"demoapp: ignoring invalid {name}={raw!r}", file=sys.stderr)
        return default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tidegate_devenv.demoapp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--version", default=os.environ.get("VERSION", "v1"))
    parser.add_argument("--error-rate", type=float, default=_env_float("ERROR_RATE", 0.0))
    parser.add_argument("--latency-ms", type=float, default=_env_float("LATENCY_MS", 5.0))
    parser.add_argument(
        "--spare",
        action="store_true",
        help="start, say so on stdout, then take version/error_rate/latency_ms as one JSON "
        "line on stdin: a warm process the gateway can hand a pod template at once",
    )
    return parser.parse_args(argv)


async def _take_configuration(args: argparse.Namespace) -> None:
    print(json.dumps({"spare": True}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    config = json.loads(line)
    args.version = str(config["version"])
    args.error_rate = float(config["error_rate"])
    args.latency_ms = float(config["latency_ms"])


async def serve_forever(args: argparse.Namespace) -> None:
    if args.spare:
        await _take_configuration(args)
    app = build_app(args.version, args.error_rate, args.latency_ms)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    port = runner.addresses[0][1]
    # One JSON line on stdout tells a supervisor (the gateway) where we listen; nothing
    # else is written to stdout so an undrained pipe can never block us.
    print(json.dumps({"listening": f"{args.host}:{port}", "version": args.version}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve_forever(parse_args(argv)))


if __name__ == "__main__":
    main()
