"""tidegate beside Flagger and Argo Rollouts: the same scenario, one controller at a time.

For each controller, on a fresh local environment (kube-apiserver, etcd, controller
manager, scheduler, kwok nodes, Prometheus, the dev gateway and its demo apps):

  bad canary     the canary fails half its requests: first 5xx -> failing measurement ->
                 traffic write (API server) -> applied at the gateway -> 99 % on stable
                 (causal.py: the same definition for every controller)
  healthy        a canary that passes: template change -> the controller says done, and ->
                 the gateway sends everything to the new version
  no data        a canary with no traffic at all, so the query returns no data: what the
                 controller did within `--observe` seconds, and when
  no Prometheus  Prometheus stopped, then a healthy canary: the same

then, for each N (`--fleet 100 1000`), on a fresh environment without the gateway (no
traffic, route status still written; an always-passing query, as bench/scale.py):

  idle           N objects settled: controller RSS, CPU s/min and API requests/min (audit
                 log, by User-Agent) over `--idle` seconds
  all changed    N templates changed at once: time until all are done, peak RSS, p99 step
                 latency (tidegate's histogram; the peers export none)

Results go to bench/results/peers-<time>.json and .md; the table is printed. Only prints.

    .venv/bin/python bench/peers.py [--controllers tidegate flagger argo-rollouts]
        [--fleet 100 1000] [--idle 60] [--observe 60] [--route-delay 2]

The gateway applies every change `--route-delay` seconds after it sees it (2 by default, as
the e2e tests), for all three controllers alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from causal import applied_at, first_write, rollback
from kubernetes import client, config
from peers_controllers import (
    CONTROLLERS,
    FAILED,
    NAME,
    READY,
    SUCCEEDED,
    Controller,
    Running,
    peers_bin,
)
from peers_report import rank, render_markdown, write_results
from rollback_latency import Watched, gateway_plans, watching
from scale import RssSampler, histogram, minus, pid_stat, quantile
from scenario import ARGO, DIFFERENCES, SCENARIO, WORKLOAD_KIND, change_patch, objects

from tidegate_devenv import audit
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.operator_process import kubectl_for
from tidegate_devenv.processes import ProcessTable, stop_process_group
from tidegate_devenv.traffic import LiveLoad

S = SCENARIO
TAIL_SECONDS = 3.0
TIMEOUT = 180.0
STEP_LATENCY = "tidegate_step_latency_seconds"
BATCH = 100


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- one scenario run ------------------------------------------------------------------------


class Case:
    """One namespace with the scenario's objects, watched from the start."""

    def __init__(self, c: Controller, info: EnvironmentInfo, namespace: str) -> None:
        self.c, self.info, self.namespace = c, info, namespace
        self.kubectl = kubectl_for(info)
        self.api_client = config.new_client_from_config(config_file=info.kubeconfig)  # type: ignore[no-untyped-call]
        self.custom = client.CustomObjectsApi(self.api_client)
        self.watched = Watched()
        self.tasks: list[asyncio.Task[None]] = []
        self.stable_hash: str | None = None

    async def __aenter__(self) -> Case:
        await asyncio.to_thread(self.kubectl.check, "create", "namespace", self.namespace)
        docs = objects(self.c.name, S, self.namespace, self.info.prometheus_url)
        await asyncio.to_thread(
            self.kubectl.check, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(docs)
        )
        informer = watching(self.api_client, self.c.resource, self.namespace, self.watched)
        self.tasks.append(asyncio.create_task(informer.run()))
        ready = await self.watched.wait_for("settled on the stable version", self.is_ready)
        self.stable_hash = (ready.get("status") or {}).get("stableRS")
        return self

    def is_ready(self, obj: dict[str, Any]) -> bool:
        return self.c.state(obj) == READY

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.to_thread(self.api_client.close)

    def state(self, obj: dict[str, Any]) -> str:
        return self.c.state(obj, self.stable_hash)

    async def change(self, version: str, error_rate: float = 0.0) -> float:
        """Patch the workload's template; time.monotonic() just before."""
        at = time.monotonic()
        await asyncio.to_thread(
            self.kubectl.check,
            "patch",
            f"{WORKLOAD_KIND[self.c.name]}/{NAME}",
            "-n",
            self.namespace,
            "--type=json",
            "-p",
            json.dumps(change_patch(version, error_rate)),
        )
        return at

    async def until(self, what: str, states: set[str], timeout: float) -> tuple[float, str] | None:
        """The first (wall time, state) among `states` that the watch delivered."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            for at, obj in self.watched.events:
                if self.state(obj) in states:
                    return at, self.state(obj)
            await asyncio.sleep(0.1)
        return None

    @contextlib.asynccontextmanager
    async def load(self) -> AsyncIterator[LiveLoad]:
        """The scenario's load on this case's host, once the stable version answers."""
        load = LiveLoad(self.info.gateway_url, S.host(self.namespace), rps=S.rps)
        task = asyncio.create_task(load.run())
        try:
            await load.wait_for(S.stable, 30)
            yield load
        finally:
            load.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def plans(self) -> list[dict[str, Any]]:
        return gateway_plans(self.info, self.namespace)

    def analysis_runs(self) -> dict[str, Any]:
        """Argo Rollouts' AnalysisRuns of the namespace, their metric results as one status."""
        runs: Any = self.custom.list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.namespace, "analysisruns"
        )
        results = [
            m for r in runs["items"] for m in (r.get("status") or {}).get("metricResults") or []
        ]
        return {"status": {"metricResults": results}}


async def bad_canary(c: Controller, info: EnvironmentInfo, running: Running) -> dict[str, Any]:
    async with Case(c, info, "bad") as case, case.load() as load:
        changed = await case.change(S.bad, S.bad_error_rate)
        offset = time.time() - time.monotonic()
        ended = await case.until("rolled back", {FAILED, SUCCEEDED}, TIMEOUT)
        await asyncio.sleep(TAIL_SECONDS)
        if ended is None or ended[1] != FAILED:
            return {"error": f"not rolled back within {TIMEOUT:.0f} s: {ended}"}
        last = case.watched.events[-1][1]
        source = case.analysis_runs() if c.name == ARGO else last
        measured = c.failing_measurement(source, running.log, changed + offset)
        events = audit.read_events(audit.audit_log(Path(info.state_dir)))
        mine = audit.requests_with_agent(c.agent, events)
        write = first_write(mine, case.namespace, c.route_resources, measured or changed + offset)
        applied = applied_at(case.plans(), NAME, S.bad, measured or changed + offset)
        result = rollback(load.samples, offset, changed, S.bad, measured, write, applied)
        if result is None:
            return {"error": "the load saw no 5xx from the bad canary"}
        return result.as_dict()


async def healthy(c: Controller, info: EnvironmentInfo) -> dict[str, Any]:
    async with Case(c, info, "good") as case, case.load():
        changed = await case.change(S.good)
        offset = time.time() - time.monotonic()
        ended = await case.until("promoted", {FAILED, SUCCEEDED}, TIMEOUT)
        if ended is None or ended[1] != SUCCEEDED:
            return {"error": f"not promoted within {TIMEOUT:.0f} s: {ended}"}
        all_new = next(
            (
                p["at"]
                for p in case.plans()
                if p["at"] >= changed + offset and p["shares"] == {S.good: 1.0}
            ),
            None,
        )
        return {
            "change_to_done": ended[0] - (changed + offset),
            "change_to_all_new_at_gateway": None
            if all_new is None
            else all_new - (changed + offset),
        }


async def observed(case: Case, changed: float, seconds: float) -> dict[str, Any]:
    """What the controller did within `seconds` of the change: its end state and when."""
    offset = time.time() - time.monotonic()
    ended = await case.until("an outcome", {FAILED, SUCCEEDED}, seconds)
    if ended is None:
        last = case.state(case.watched.events[-1][1])
        return {"outcome": f"held ({last} after {seconds:.0f} s)", "after": None}
    word = "rolled back" if ended[1] == FAILED else "promoted"
    return {"outcome": word, "after": ended[0] - (changed + offset)}


async def no_data(c: Controller, info: EnvironmentInfo, seconds: float) -> dict[str, Any]:
    # No load at all: the canary has no requests, the query's denominator is empty.
    async with Case(c, info, "nodata") as case:
        changed = await case.change(S.good)
        return await observed(case, changed, seconds)


async def prometheus_stopped(
    c: Controller, info: EnvironmentInfo, seconds: float
) -> dict[str, Any]:
    async with Case(c, info, "noprom") as case, case.load():
        prometheus = next(
            r for r in ProcessTable(Path(info.state_dir)).records() if r.name == "prometheus"
        )
        await asyncio.to_thread(stop_process_group, prometheus.pid)
        changed = await case.change(S.good)
        return await observed(case, changed, seconds)


# --- fleets ----------------------------------------------------------------------------------


def fleet_docs(c: Controller, info: EnvironmentInfo, where: list[tuple[str, str]]) -> str:
    """The scenario's fleet objects once per (namespace, name); Flagger's MetricTemplate and
    Argo's AnalysisTemplate are per namespace, applied again unchanged."""
    docs = []
    for namespace, name in where:
        for obj in objects(c.name, S, namespace, info.prometheus_url, fleet=True):
            if obj["kind"] not in ("MetricTemplate", "AnalysisTemplate"):
                # The app's name is in its labels, selector, route and host: all renamed.
                obj = json.loads(json.dumps(obj).replace(f'"{NAME}', f'"{name}'))
            docs.append(obj)
    return yaml.safe_dump_all(docs)


def patch_all(c: Controller, api_client: client.ApiClient, where: list[tuple[str, str]]) -> None:
    """The new version into every workload's template, as one JSON patch each. Not an
    apply: Flagger owns the replicas of the Deployment it scales, and an apply would either
    conflict or take them back."""
    patch = change_patch(S.good)
    apps = client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)

    def one(item: tuple[str, str]) -> None:
        namespace, name = item
        # The client would send a custom object's patch as a merge patch: say which it is.
        kind = {"_content_type": "application/json-patch+json"}
        if c.name == ARGO:
            custom.patch_namespaced_custom_object(
                "argoproj.io", "v1alpha1", namespace, "rollouts", name, patch, **kind
            )
        else:
            apps.patch_namespaced_deployment(name, namespace, patch, **kind)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, where))


def phases(
    c: Controller, custom: client.CustomObjectsApi, stable: dict[str, str]
) -> dict[str, str]:
    response: Any = custom.list_cluster_custom_object(*c.resource, _preload_content=False)
    items = json.loads(response.data)["items"]
    return {
        f"{o['metadata']['namespace']}/{o['metadata']['name']}": c.state(
            o, stable.get(f"{o['metadata']['namespace']}/{o['metadata']['name']}")
        )
        for o in items
    }


@dataclass
class Waited:
    """What `wait_all` saw: how long until all were there (None: not within the timeout),
    and when each object first got there (seconds from `since`)."""

    elapsed: float | None
    reached: dict[str, float]


def wait_all(
    c: Controller,
    custom: client.CustomObjectsApi,
    n: int,
    state: str,
    stable: dict[str, str],
    timeout: float,
    since: float | None = None,
) -> Waited:
    """Polls every second until `n` objects are in `state` (or failed). `reached` counts
    from `since` (a time.monotonic()), by default the start of the wait."""
    began = time.monotonic()
    since = began if since is None else since
    said = 0.0
    reached: dict[str, float] = {}
    while time.monotonic() - began < timeout:
        seen = phases(c, custom, stable)
        polled = time.monotonic()
        now = polled - began
        counts: dict[str, int] = {}
        for key, s in seen.items():
            counts[s] = counts.get(s, 0) + 1
            if s == state:
                reached.setdefault(key, polled - since)
        if sum(s in (state, FAILED) for s in seen.values()) >= n and len(seen) >= n:
            return Waited(time.monotonic() - began, reached)
        if now - said > 30:
            said = now
            log(f"  waiting for {n} {state}: {counts}")
        time.sleep(1.0)
    return Waited(None, reached)


def targets_released(
    api_client: client.ApiClient, where: list[tuple[str, str]], timeout: float
) -> bool:
    """Polls every second until every target Deployment (`where`) is scaled to zero."""
    apps = client.AppsV1Api(api_client)
    wanted = set(where)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = apps.list_deployment_for_all_namespaces()
        running = {
            (d.metadata.namespace, d.metadata.name)
            for d in listed.items
            if (d.metadata.namespace, d.metadata.name) in wanted and (d.spec.replicas or 0) > 0
        }
        if not running:
            return True
        time.sleep(1.0)
    return False


def fleet(
    c: Controller, info: EnvironmentInfo, running: Running, n: int, idle_s: float, timeout: float
) -> dict[str, Any]:
    kubectl = kubectl_for(info)
    api_client = config.new_client_from_config(config_file=info.kubeconfig)  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api_client)
    where = [(f"fleet-{i % 10}", f"app-{i}") for i in range(n)]
    for namespace in sorted({ns for ns, _ in where}):
        kubectl.check("create", "namespace", namespace)
    batches = [where[i : i + BATCH] for i in range(0, n, BATCH)]

    def apply(batch: list[tuple[str, str]]) -> None:
        kubectl.check("apply", "--server-side", "-f", "-", stdin=fleet_docs(c, info, batch))

    out: dict[str, Any] = {"n": n}
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(apply, batches))
    settled = wait_all(c, custom, n, READY, {}, timeout).elapsed
    if settled is None:
        return {**out, "error": f"not all {n} settled within {timeout:.0f} s"}
    # Initialized is reached once tidegate's copy serves; the user's Deployment is scaled to
    # zero after the gateway reports the route applied and the scale-down delay (as Flagger's
    # Initialized follows its scale to zero). Idle starts after that.
    if c.name == "tidegate" and not targets_released(api_client, where, timeout):
        return {**out, "error": f"not all {n} targets scaled to zero within {timeout:.0f} s"}
    out["settled_s"] = time.monotonic() - began
    stable = {}
    if c.name == ARGO:
        items = json.loads(
            custom.list_cluster_custom_object(*c.resource, _preload_content=False).data
        )["items"]
        stable = {
            f"{o['metadata']['namespace']}/{o['metadata']['name']}": o["status"]["stableRS"]
            for o in items
        }
    time.sleep(10)
    log(f"  {n} settled in {out['settled_s']:.0f} s; idle for {idle_s:.0f} s")
    audit_file = audit.audit_log(Path(info.state_dir))
    mark = audit.audit_ids(audit.read_events(audit_file))
    cpu0 = pid_stat(running.pid)[0]
    t0 = time.monotonic()
    time.sleep(idle_s)
    window = time.monotonic() - t0
    cpu1, rss = pid_stat(running.pid)
    requests = audit.requests_with_agent(c.agent, audit.since(mark, audit.read_events(audit_file)))
    out.update(
        idle_rss=rss,
        idle_cpu_s_per_min=(cpu1 - cpu0) / window * 60,
        idle_requests_per_min=len(requests) / window * 60,
        idle_writes_per_min=sum(r.is_write for r in requests) / window * 60,
        idle_by_verb=dict(audit.count_by_verb(requests)),
        idle_window_s=window,
    )
    steps_before = histogram(running.metrics_text(), STEP_LATENCY) if running.metrics_text else None
    sampler = RssSampler(running.pid)
    sampler.start()
    log(f"  changing all {n} at once")
    changed = time.monotonic()
    try:
        patch_all(c, api_client, where)
        done = wait_all(c, custom, n, SUCCEEDED, stable, timeout, since=changed)
        waited = time.monotonic() - changed
        out["change_to_all_done_s"] = None if done.elapsed is None else waited
        # Each rollout's own time from the change to done, from the same polls (1 s apart),
        # for every controller alike; and how many were done when the wait gave up.
        each = sorted(done.reached.values())
        out["done"] = len(each)
        out["done_p50_s"] = rank(each, 0.5)
        out["done_p99_s"] = rank(each, 0.99)
        out["waited_s"] = waited
    except Exception as error:  # the idle figures stand; the change's cell says what failed
        out["change_error"] = f"{type(error).__name__}: {error}"
    out["peak_rss"] = max(sampler.stop(), rss)
    seen = phases(c, custom, stable)
    out["failed"] = sum(s == FAILED for s in seen.values())
    if steps_before is not None:
        steps = minus(histogram(running.metrics_text(), STEP_LATENCY), steps_before)
        out["step_p99_s"] = quantile(0.99, steps)
        out["steps"] = steps[-1][1] if steps else 0
    api_client.close()
    return out


# --- the whole run ---------------------------------------------------------------------------


CASES = ("bad_canary", "healthy", "no_data", "prometheus_stopped")


@contextlib.contextmanager
def controller_on_environment(
    c: Controller,
    state_dir: Path,
    binaries: Path,
    client_qps: int | None,
    *,
    gateway: bool,
    route_delay: float,
) -> Iterator[tuple[EnvironmentInfo, Running]]:
    """A fresh environment with the controller's CRDs and the controller running on it;
    both stopped on the way out, whatever happened. The gateway (or the status-only process
    that stands in for it) applies each change `route_delay` seconds after it sees it."""
    running: Running | None = None
    try:
        info = start_environment(state_dir, gateway=gateway, route_delay=route_delay)
        c.install(kubectl_for(info))
        running = c.start(info, state_dir, binaries, client_qps)
        yield info, running
    finally:
        if running is not None:
            running.stop()
        stop_environment(state_dir)


async def cases(
    c: Controller, info: EnvironmentInfo, running: Running, observe: float
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, run in (
        ("bad_canary", lambda: bad_canary(c, info, running)),
        ("healthy", lambda: healthy(c, info)),
        ("no_data", lambda: no_data(c, info, observe)),
        ("prometheus_stopped", lambda: prometheus_stopped(c, info, observe)),
    ):
        log(f"{c.name}: {key}")
        try:
            result[key] = await run()
        except Exception as error:  # the table says which case failed, and how
            result[key] = {"error": f"{type(error).__name__}: {error}"}
        log(f"{c.name}: {key}: {result[key]}")
    return result


def one_controller(c: Controller, args: argparse.Namespace, binaries: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"settings": c.settings, "differences": DIFFERENCES[c.name]}
    state_dir = args.state_dir / c.name
    if args.cases:
        log(f"{c.name}: environment with the gateway")
        try:
            with controller_on_environment(
                c, state_dir, binaries, args.client_qps, gateway=True, route_delay=args.route_delay
            ) as (info, running):
                result.update(asyncio.run(cases(c, info, running, args.observe)))
        except Exception as error:
            for key in CASES:
                result.setdefault(key, {"error": f"{type(error).__name__}: {error}"})
    for n in args.fleet:
        log(f"{c.name}: fleet of {n}, environment without the gateway")
        try:
            with controller_on_environment(
                c, state_dir, binaries, args.client_qps, gateway=False, route_delay=args.route_delay
            ) as (
                info,
                running,
            ):
                result[f"fleet_{n}"] = fleet(c, info, running, n, args.idle, args.timeout)
        except Exception as error:
            result[f"fleet_{n}"] = {"n": n, "error": f"{type(error).__name__}: {error}"}
        log(f"{c.name}: fleet of {n}: {result[f'fleet_{n}']}")
    return result


def machine() -> dict[str, str]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "load_before": uptime}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    parser.add_argument("--fleet", nargs="*", type=int, default=[100, 1000])
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument(
        "--observe", type=float, default=90.0, help="no-data/no-Prometheus watch, seconds"
    )
    parser.add_argument(
        "--no-cases",
        dest="cases",
        action="store_false",
        help="only the fleets (for a second run at another N)",
    )
    parser.add_argument(
        "--client-qps",
        type=int,
        default=None,
        help="the peers' client-side API request limit (burst twice that); default: theirs",
    )
    parser.add_argument(
        "--route-delay",
        type=float,
        default=2.0,
        help="seconds the gateway takes to apply a change, the same for every controller",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="fleet waits, seconds")
    parser.add_argument("--state-dir", type=Path, default=Path.cwd() / ".state" / "bench-peers")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.state_dir = args.state_dir.absolute()
    signal.signal(signal.SIGTERM, _interrupt)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "scenario": {k: v for k, v in S.__dict__.items()},
        "fleet_sizes": args.fleet,
        "idle_window_s": args.idle,
        "observe_s": args.observe if args.cases else None,
        "cases": args.cases,
        "client_qps": args.client_qps,
        "route_delay_s": args.route_delay,
        "controllers": {},
    }
    try:
        binaries = peers_bin()
        for name in args.controllers:
            run["controllers"][name] = one_controller(CONTROLLERS[name], args, binaries)
            write_results(run, args.results, stamp)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    run["machine"]["load_after"] = subprocess.run(
        ["uptime"], capture_output=True, text=True
    ).stdout.strip()
    json_path, md_path = write_results(run, args.results, stamp)
    print(render_markdown(run), flush=True)
    log(f"results: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
