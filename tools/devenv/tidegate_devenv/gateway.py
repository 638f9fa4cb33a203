"""A Gateway API implementation for the local cluster, where pods never really run.

Requests whose Host names a Service as cluster DNS does (`<service>.<namespace>.svc`, or
`.svc.cluster.local`, any port) go straight to that Service's ready pods, as from a pod in
the cluster through kube-proxy (the loadtester's, with its --connect-to); every other request
is routed by HTTPRoute (host, path, headers, query parameters and method, in the
Gateway API's precedence; weighted backendRefs) to Services, and from a Service, like
kube-proxy would, to its ready pods; each pod template is played by one local demo-app
process. A rule's RequestMirror filters also send copies of its requests to their Service,
without waiting for them, and throw the copies' answers away. Per-backend metrics (mirrored
copies labelled mirrored="true") are exported on a separate address, and the demo apps are
published to Prometheus through a file_sd targets file.

A rule's weighted backendRefs are chosen by smooth weighted round robin, as NGINX and
Envoy do (`routing.SmoothSplit`): any run of requests splits as the weights say, give or take
one. The other choices (which pod template of a Service, which requests to mirror) are
random but repeatable: each route draws from generators of its own, seeded from the
gateway's seed (--seed, $TIDEGATE_GATEWAY_SEED, else a random one it logs) and the route's
namespace/name, one for the requests and one for their mirrored copies.

With --route-delay D > 0 it behaves like a real gateway, which applies a change some time
after it is written: each change it sees (an HTTPRoute, Service or Pod added, modified or
deleted) reaches its routing snapshot D seconds later, plus a little jitter
(`tidegate_devenv.delayed`). Once a route's generation is applied, with or without a delay,
its status.parents say so as a Gateway controller writes them (`tidegate_devenv.routestatus`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from tidegate_devenv.delayed import PODS, ROUTES, SERVICES, DelayedView, seconds_arg
from tidegate_devenv.demoprocs import DemoPool
from tidegate_devenv.routestatus import StatusWriter, status_patcher
from tidegate_devenv.routing import (
    BackendRef,
    Route,
    Rule,
    ServiceInfo,
    SmoothSplit,
    TemplateGroup,
    mirror_targets,
    pick_backend,
    pick_template,
    pod_from_dict,
    ready_endpoints,
    request_info,
    route_from_dict,
    select,
    service_address,
    service_from_dict,
    split_by_template,
    version_shares,
)

log = logging.getLogger("tidegate.gateway")

TARGETS_FILE = Path("prometheus-targets") / "demo-apps.json"
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
UPSTREAM_TIMEOUT = 30.0

ServiceKey = tuple[str, str]
# Changes of routes' version shares kept for /plans: enough for a benchmark's whole run.
PLAN_HISTORY = 50_000
# The purposes a route draws random choices for, each from its own generator.
REQUESTS = ""
MIRRORS = "mirror"


@dataclass(frozen=True)
class Snapshot:
    """Everything request handling needs, recomputed on every cluster change."""

    routes: tuple[Route, ...] = ()
    services: Mapping[ServiceKey, ServiceInfo] = field(default_factory=dict)
    endpoints: Mapping[ServiceKey, Mapping[str, TemplateGroup]] = field(default_factory=dict)
    # template key -> the first Service (by namespace/name) selecting it
    template_service: Mapping[str, ServiceKey] = field(default_factory=dict)

    def plans(self) -> dict[tuple[str, str], dict[str, float]]:
        """Each route's first rule's share of requests per app version (`version_shares`)."""
        return {
            (r.namespace, r.name): version_shares(r.rules[0], self.endpoints) for r in self.routes
        }

    @property
    def templates(self) -> dict[str, TemplateGroup]:
        merged: dict[str, TemplateGroup] = {}
        for groups in self.endpoints.values():
            merged.update(groups)
        return merged


def build_snapshot(
    routes: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
) -> Snapshot:
    parsed_routes = tuple(sorted(map(route_from_dict, routes), key=lambda r: (r.namespace, r.name)))
    parsed_services = sorted(map(service_from_dict, services), key=lambda s: (s.namespace, s.name))
    parsed_pods = [pod_from_dict(p) for p in pods]
    endpoints: dict[ServiceKey, dict[str, TemplateGroup]] = {}
    template_service: dict[str, ServiceKey] = {}
    for svc in parsed_services:
        if svc.namespace in SYSTEM_NAMESPACES:
            continue
        key = (svc.namespace, svc.name)
        groups = split_by_template(ready_endpoints(svc, parsed_pods))
        endpoints[key] = groups
        for template in groups:
            template_service.setdefault(template, key)
    return Snapshot(
        routes=parsed_routes,
        services={(s.namespace, s.name): s for s in parsed_services},
        endpoints=endpoints,
        template_service=template_service,
    )


# What the demo app answers (200, 500) and what the gateway itself answers when a backend
# cannot be reached (502, 503).
PREINITIALISED_CODES = ("200", "500", "502", "503")


class GatewayMetrics:
    """Per-backend request counts and latencies. Mirrored copies are counted for the backend
    they were copied to, with mirrored="true", so that a canary's error rate and latency
    include the traffic it only sees mirrored; queries that sum over the label see both."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "Requests handled by the gateway, by route backend and status code; mirrored "
            'copies with mirrored="true".',
            ["namespace", "route", "backend", "code", "mirrored"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from receiving a request (or sending its mirrored copy) to having the "
            "backend's response.",
            ["namespace", "route", "backend", "mirrored"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._seen: set[tuple[str, str, str, str]] = set()

    def observe(
        self,
        namespace: str,
        route: str,
        backend: str,
        code: int,
        seconds: float,
        *,
        mirrored: bool = False,
    ) -> None:
        copy = "true" if mirrored else "false"
        if (namespace, route, backend, copy) not in self._seen:
            # A series that appears with its first error has a single sample at the next
            # analysis, which rate() cannot use: an error rate would read 0 while the
            # backend fails. Creating the usual codes at zero on a backend's first request
            # makes them all start together, as Prometheus advises for known labels.
            self._seen.add((namespace, route, backend, copy))
            for usual in PREINITIALISED_CODES:
                self.requests.labels(namespace, route, backend, usual, copy)
        self.requests.labels(namespace, route, backend, str(code), copy).inc()
        self.duration.labels(namespace, route, backend, copy).observe(seconds)


def render_targets(service_of: Mapping[str, ServiceKey], pool: DemoPool) -> list[dict[str, Any]]:
    """file_sd entries for every running demo app."""
    entries: list[dict[str, Any]] = []
    for key, proc in sorted(pool.processes.items()):
        namespace, service = service_of.get(key, (key.split("/", 1)[0], ""))
        labels = {
            "namespace": namespace,
            "service": service,
            "version": proc.spec.version,
            "template": key,
        }
        entries.append({"targets": [proc.address], "labels": labels})
    return entries


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


SEED_ENV = "TIDEGATE_GATEWAY_SEED"
SPARES_ENV = "TIDEGATE_GATEWAY_SPARES"


@dataclass(frozen=True)
class Outgoing:
    """A request as it is sent on to a backend, and copied to mirrors."""

    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


async def outgoing(request: web.Request) -> Outgoing:
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    return Outgoing(request.method, request.path_qs, headers, await request.read())


class Gateway:
    def __init__(
        self,
        state_dir: Path,
        *,
        grace: float = 10.0,
        seed: int = 0,
        route_delay: float = 0.0,
        spares: int = 1,
    ) -> None:
        self.targets_path = state_dir / TARGETS_FILE
        self.snapshot = Snapshot()
        # The HTTPRoutes of the snapshot as the cluster had them, for their status.
        self.routes: tuple[Mapping[str, Any], ...] = ()
        # Its own generator, so that the jitter draws never change the routes' choices.
        self.view = DelayedView(route_delay, random.Random(f"{seed}/route-delay"))
        self._seen = asyncio.Event()
        self.status_wake = asyncio.Event()
        # Delayed: when the state the informers first listed is all applied.
        self._ready_at: float | None = None
        self.metrics = GatewayMetrics()
        self.seed = seed
        self._rngs: dict[tuple[str, str, str], random.Random] = {}
        self.split = SmoothSplit()
        self.synced = False
        self.wake = asyncio.Event()
        self.pool = DemoPool(grace=grace, on_change=self.wake.set, spares=spares)
        self._written_targets: str | None = None
        # Sticky, so a demo app keeps its service label during its grace period.
        self._service_of: dict[str, ServiceKey] = {}
        self._session: aiohttp.ClientSession | None = None
        # Mirrored copies have a connection pool of their own, so that a slow mirror
        # backend can never hold up the requests whose answers clients wait for.
        self._mirror_session: aiohttp.ClientSession | None = None
        self._mirrors: set[asyncio.Task[None]] = set()
        # When each route's version shares changed here, as (time.time(), namespace, route,
        # shares): the moment a controller's write took effect at the gateway, for the
        # benchmarks (GET /plans on the metrics address).
        self.plan_history: collections.deque[tuple[float, str, str, dict[str, float]]] = (
            collections.deque(maxlen=PLAN_HISTORY)
        )
        self._plans: dict[tuple[str, str], dict[str, float]] = {}

    # --- state -------------------------------------------------------------------------

    def rng_for(self, route: Route, purpose: str = REQUESTS) -> random.Random:
        """The route's own generator for backend and template choices (REQUESTS), or for
        which requests to mirror and where their copies go (MIRRORS)."""
        key = (route.namespace, route.name, purpose)
        rng = self._rngs.get(key)
        if rng is None:
            # A str seed is hashed with SHA-512: the same on every run, unlike hash().
            # REQUESTS keeps the seed string it had before mirrors had a generator.
            suffix = f"/{purpose}" if purpose else ""
            rng = self._rngs[key] = random.Random(f"{self.seed}/{key[0]}/{key[1]}{suffix}")
        return rng

    @property
    def delayed(self) -> bool:
        return self.view.delay > 0

    def update(
        self,
        routes: Iterable[Mapping[str, Any]],
        services: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
    ) -> None:
        """Route by these objects from now on (the moment a change is applied)."""
        self.routes = tuple(routes)
        self.snapshot = build_snapshot(self.routes, services, pods)
        self.wake.set()
        self.status_wake.set()
        self.record_plans(time.time())

    def applied(self) -> tuple[tuple[Mapping[str, Any], ...], Mapping[ServiceKey, ServiceInfo]]:
        """The routes and Services of the snapshot: what route status is written from."""
        return self.routes, self.snapshot.services

    # --- the delayed view (--route-delay) -----------------------------------------------

    def seen(self, kind: str, key: tuple[str, str], obj: Mapping[str, Any] | None) -> None:
        """An informer saw an object change: it is applied once its delay has passed."""
        self.view.seen(kind, key, obj, time.monotonic())
        self._seen.set()

    def informers_synced(self) -> None:
        """Ready once everything the first lists held is applied, not before."""
        if self._ready_at is None:
            self._ready_at = self.view.latest_due
            self._seen.set()

    def apply_due(self, now: float) -> None:
        if self.view.apply_due(now):
            self.update(self.view.items(ROUTES), self.view.items(SERVICES), self.view.items(PODS))
        if self._ready_at is not None and now >= self._ready_at:
            self.synced = True

    async def apply_forever(self) -> None:
        """Apply the delayed changes as they fall due."""
        while True:
            self._seen.clear()
            try:
                self.apply_due(time.monotonic())
            except Exception:  # as a failed change callback would be: logged, not fatal
                log.exception("applying delayed changes failed")
            due = self.view.next_due()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seen.wait(), timeout)

    def record_plans(self, now: float) -> None:
        """Append to `plan_history` the routes whose version shares the snapshot changed."""
        plans = self.snapshot.plans()
        for key, shares in plans.items():
            if self._plans.get(key) != shares:
                self.plan_history.append((now, key[0], key[1], shares))
        self._plans = plans

    async def reconcile(self) -> None:
        """Run demo apps for every template with ready pods, stop the stale ones and
        publish the targets file."""
        self.pool.keep_spare()
        templates = self.snapshot.templates
        missing = [g for k, g in templates.items() if k not in self.pool.processes]
        results = await asyncio.gather(
            *(self.pool.ensure(g.key, g.spec) for g in missing), return_exceptions=True
        )
        for group, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                log.error("could not start demo app for %s: %s", group.key, result)
        self.pool.mark_used(set(templates))
        await self.pool.reap()
        self.write_targets()

    def write_targets(self) -> None:
        self._service_of.update(self.snapshot.template_service)
        for key in set(self._service_of) - set(self.pool.processes):
            del self._service_of[key]
        text = json.dumps(render_targets(self._service_of, self.pool), indent=2) + "\n"
        if text != self._written_targets:
            write_atomically(self.targets_path, text)
            self._written_targets = text

    async def reconcile_forever(self, period: float = 1.0) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), period)
            self.wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile failed")

    # --- HTTP --------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        snapshot = self.snapshot
        service = service_address(request.host)
        if service is not None:
            return await self._to_service(request, snapshot, service, start)
        info = request_info(
            request.host,
            request.path,
            request.method,
            request.headers.items(),
            request.query.items(),
        )
        match = select(snapshot.routes, info)
        if match is None:
            self.metrics.observe("", "", "", 404, time.perf_counter() - start)
            return _error(404, f"no HTTPRoute matches host {request.host!r} path {request.path!r}")
        route = match.route
        rng = self.rng_for(route)
        backend = pick_backend(
            match.rule, self.split, (route.namespace, route.name, match.rule_index)
        )
        if backend is None:
            self.metrics.observe(route.namespace, route.name, "", 500, time.perf_counter() - start)
            return _error(500, f"HTTPRoute {route.namespace}/{route.name}: no backend with weight")
        copies = self._mirror_endpoints(snapshot, route, match.rule)
        sent = await outgoing(request)
        for target, group in copies:
            self._start_copy(route, target, group, sent)
        response = await self._forward(sent, snapshot, (backend.namespace, backend.name), rng)
        elapsed = time.perf_counter() - start
        self.metrics.observe(route.namespace, route.name, backend.name, response.status, elapsed)
        response.headers["X-Tidegate-Backend"] = f"{backend.namespace}/{backend.name}"
        return response

    async def _to_service(
        self, request: web.Request, snapshot: Snapshot, service: ServiceKey, start: float
    ) -> web.Response:
        """A request addressed to a Service by its cluster DNS name (as from a pod in the
        cluster: the loadtester) goes to its ready pods, as kube-proxy sends it, with no
        HTTPRoute; counted with route="" and the Service as backend."""
        rng = self._service_rng(service)
        response = await self._forward(await outgoing(request), snapshot, service, rng)
        elapsed = time.perf_counter() - start
        self.metrics.observe(service[0], "", service[1], response.status, elapsed)
        response.headers["X-Tidegate-Backend"] = f"{service[0]}/{service[1]}"
        return response

    def _service_rng(self, service: ServiceKey) -> random.Random:
        """A Service's own generator for its template choices (as rng_for, per Service)."""
        key = (service[0], service[1], "service")
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(f"{self.seed}/service/{key[0]}/{key[1]}")
        return rng

    async def _forward(
        self, sent: Outgoing, snapshot: Snapshot, service: ServiceKey, rng: random.Random
    ) -> web.Response:
        group = self._endpoint(snapshot, service, rng)
        if isinstance(group, web.Response):
            return group
        return await self._send(sent, group, self._client())

    def _endpoint(
        self, snapshot: Snapshot, service: ServiceKey, rng: random.Random
    ) -> TemplateGroup | web.Response:
        """The pod template that serves a request to `service`, or the error answer."""
        if service not in snapshot.services:
            return _error(500, f"backend Service {service[0]}/{service[1]} not found")
        groups = snapshot.endpoints.get(service, {})
        # As a readiness probe would: templates whose app is up take the traffic, and a
        # Service waits for a starting app only when none of its apps is up yet.
        up = {key: g for key, g in groups.items() if self._is_up(key)}
        group = pick_template(up or groups, rng)
        if group is None:
            return _error(503, f"Service {service[0]}/{service[1]} has no ready endpoints")
        return group

    async def _send(
        self, sent: Outgoing, group: TemplateGroup, session: aiohttp.ClientSession
    ) -> web.Response:
        try:
            proc = await self.pool.ensure(group.key, group.spec)
        except RuntimeError as exc:
            return _error(503, str(exc))
        try:
            async with session.request(
                sent.method,
                f"http://{proc.address}{sent.path_qs}",
                headers=sent.headers,
                data=sent.body,
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"upstream {proc.address} failed: {exc}")

    # --- mirroring -----------------------------------------------------------------------

    def _mirror_endpoints(
        self, snapshot: Snapshot, route: Route, rule: Rule
    ) -> list[tuple[BackendRef, TemplateGroup | web.Response]]:
        """Where this request's copies go, if anywhere: their backends and, for each, its
        pod template (or the error it meets). Chosen before the handler first awaits, so
        the mirror generator is drawn from in the order requests arrive."""
        rng = self.rng_for(route, MIRRORS)
        return [
            (target, self._endpoint(snapshot, (target.namespace, target.name), rng))
            for target in mirror_targets(rule, rng)
        ]

    def _start_copy(
        self, route: Route, target: BackendRef, group: TemplateGroup | web.Response, sent: Outgoing
    ) -> None:
        """Send a copy of `sent` in the background; only its status and time are kept, in
        the metrics. The client's answer never waits for it."""
        task = asyncio.create_task(self._send_copy(route, target, group, sent))
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _send_copy(
        self, route: Route, target: BackendRef, group: TemplateGroup | web.Response, sent: Outgoing
    ) -> None:
        start = time.perf_counter()
        try:
            if isinstance(group, web.Response):
                status = group.status
            else:
                status = (await self._send(sent, group, self._mirror_client())).status
        except Exception:  # a task nobody awaits: say what went wrong, count it as a 502
            log.exception("mirroring to %s/%s failed", target.namespace, target.name)
            status = 502
        elapsed = time.perf_counter() - start
        self.metrics.observe(
            route.namespace, route.name, target.name, status, elapsed, mirrored=True
        )

    @property
    def mirrors_in_flight(self) -> int:
        return len(self._mirrors)

    async def mirrors_done(self) -> None:
        """Wait until every mirrored copy sent so far has its answer (or has failed)."""
        while self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)

    def _is_up(self, template: str) -> bool:
        process = self.pool.processes.get(template)
        return process is not None and process.alive

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = _new_session()
        return self._session

    def _mirror_client(self) -> aiohttp.ClientSession:
        if self._mirror_session is None or self._mirror_session.closed:
            self._mirror_session = _new_session()
        return self._mirror_session

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def metrics_app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            resp = web.Response(body=generate_latest(self.metrics.registry))
            resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return resp

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def plans(request: web.Request) -> web.Response:
            namespace = request.query.get("namespace")
            return web.json_response(
                [
                    {"at": at, "namespace": ns, "route": route, "shares": shares}
                    for at, ns, route, shares in list(self.plan_history)
                    if namespace is None or ns == namespace
                ]
            )

        async def readyz(_: web.Request) -> web.Response:
            return web.json_response({"synced": self.synced}, status=200 if self.synced else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/plans", plans)
        app.router.add_get("/readyz", readyz)
        return app

    async def close(self) -> None:
        for task in self._mirrors:
            task.cancel()
        await asyncio.gather(*self._mirrors, return_exceptions=True)
        await self.pool.close()
        for session in (self._session, self._mirror_session):
            if session is not None:
                await session.close()
        # Nothing is left to scrape.
        self._written_targets = None
        self.snapshot = Snapshot()
        self.write_targets()


def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT), auto_decompress=False
    )


def _error(status: int, message: str) -> web.Response:
    """An answer of the gateway's own (no application wrote it): logged, since each is a
    request the application never saw."""
    log.info("answered %d: %s", status, message)
    return web.json_response({"error": message}, status=status)


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _serve(app: web.Application, address: tuple[str, int]) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address[0], address[1]).start()
    return runner


async def _mirror_cluster(gateway: Gateway, kubeconfig: str | None) -> None:
    # Imported here so the pure parts above don't need the Kubernetes client at import time.
    from kubernetes import config

    from tidegate_devenv.kubewatch import ClusterMirror

    # A client of its own, not the library's global default; reading the kubeconfig is file
    # I/O, so off the loop. Without a file: $KUBECONFIG, else ~/.kube/config.
    api_client = await asyncio.to_thread(config.new_client_from_config, config_file=kubeconfig)
    mirror: ClusterMirror | None = None

    def changed() -> None:
        assert mirror is not None
        if gateway.delayed:
            # The objects went to gateway.seen; they are applied by apply_forever.
            if mirror.synced:
                gateway.informers_synced()
            return
        gateway.synced = mirror.synced
        gateway.update(
            mirror.routes.items.values(), mirror.services.items.values(), mirror.pods.items.values()
        )

    mirror = ClusterMirror(api_client, changed, gateway.seen if gateway.delayed else None)
    writer = StatusWriter(status_patcher(api_client))
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(mirror.run(), name="informers")
            tasks.create_task(writer.run(gateway.applied, gateway.status_wake), name="status")
    finally:
        await asyncio.to_thread(api_client.close)


async def run(args: argparse.Namespace) -> None:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    # Logged so that a run's choices can be made again: --seed or $TIDEGATE_GATEWAY_SEED.
    log.info("gateway seed %d", seed)
    gateway = Gateway(
        Path(args.state_dir),
        grace=args.grace,
        seed=seed,
        route_delay=args.route_delay,
        spares=args.spares,
    )
    if gateway.delayed:
        log.info("applying cluster changes %.3gs after they are seen", args.route_delay)
    gateway.write_targets()
    runners = [await _serve(gateway.app(), args.listen)]
    if args.metrics_listen is not None:
        runners.append(await _serve(gateway.metrics_app(), args.metrics_listen))
    log.info("gateway listening on %s:%d", *args.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_mirror_cluster(gateway, args.kubeconfig), name="mirror"),
        asyncio.create_task(gateway.reconcile_forever(), name="reconcile"),
    ]
    if gateway.delayed:
        tasks.append(asyncio.create_task(gateway.apply_forever(), name="route-delay"))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and not task.cancelled() and task.exception() is not None:
                log.error("%s stopped: %r", task.get_name(), task.exception())
    finally:
        for task in [stopper, *tasks]:
            task.cancel()
        await asyncio.gather(stopper, *tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
        await gateway.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tidegate_devenv.gateway", description=__doc__)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    parser.add_argument("--listen", type=parse_address, default=("127.0.0.1", 8080))
    parser.add_argument("--metrics-listen", type=parse_address, default=None)
    parser.add_argument("--state-dir", default=".")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds before stopping")
    parser.add_argument(
        "--route-delay",
        type=seconds_arg,
        default=0.0,
        metavar="SECONDS",
        help="apply each HTTPRoute, Service and Pod change this long after it is seen, as "
        "a real gateway lags (plus up to min(20%%, 0.5s) of jitter); default 0: at once",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=int(os.environ[SEED_ENV]) if os.environ.get(SEED_ENV) else None,
        help=f"seed for the weighted choices (default: ${SEED_ENV}, else random)",
    )
    parser.add_argument(
        "--spares",
        type=int,
        default=int(os.environ.get(SPARES_ENV) or 1),
        help="warm demo-app processes kept for the next pod templates: one per rollout "
        f"expected to start a template at the same moment (default: ${SPARES_ENV}, else 1)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
