"""N rollouts at once on the local environment: what the operator costs, idle and under load.

Starts the local environment WITHOUT the dev gateway (`start_environment(gateway=False)`):
no demo-app processes at all, as the gateway would start one per pod template and that does
not scale to thousands. Route status is still written: a light process watching only
HTTPRoutes and Services (`tidegate_devenv.statusonly`) accepts each route's generation at
once, as the gateway does with no route delay, so a rollout's route writes count as
applied. The analysis needs no traffic: one metric, `vector(0)` with thresholdRange
{max: 1}, asked of the environment's real Prometheus at every interval.

Each rollout has a Deployment (1 replica, the pause image, on kwok), a Service, an HTTPRoute
and a ProgressiveRollout with steps setWeight 20 and 60, analysis every 2 s, spread over
several namespaces and created with one server-side apply per batch of 100 rollouts. Prints:

  - the operator's RSS (VmRSS) idle (all rollouts Initialized and settled) and its peak
    while all N roll out;
  - its CPU seconds (utime + stime) per rollout, over the whole run and over the change;
  - API requests per second by verb from the operator while idle, from the API server's
    audit log (User-Agent `tidegate/...`, kopf's included), over a window longer than the
    idle resync, and those per rollout per hour;
  - the time from changing the pod template of all N Deployments to all N `Succeeded`;
  - the step latency p50/p99, from the operator's tidegate_step_latency_seconds histogram
    (the start of an analysis that passed to the routes written for the next step),
    interpolated within its buckets as Prometheus' histogram_quantile does.

Goals (printed beside the figures, never asserted): idle 0 requests per rollout per hour
and 0 writes; step latency p99 under 2 s; RSS under 512 MiB. The exit code is non-zero only
when the run itself failed.

    .venv/bin/python bench/scale.py [--rollouts 1000] [--namespaces 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families

from tidegate import api
from tidegate.adapters.workloads import ROLE_LABEL
from tidegate.handlers import IDLE_RESYNC_SECONDS
from tidegate_devenv import audit
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.operator_process import (
    OperatorProcess,
    install_crd,
    kubectl_for,
    operator_log,
    start_operator,
)

DATA_PLANE = (
    "no dev gateway and no demo apps (start_environment(gateway=False)), route status still "
    "written at once (tidegate_devenv.statusonly); the analysis needs no traffic: "
    "vector(0) <= 1 against the environment's Prometheus"
)
OPERATOR_AGENT = "tidegate/"
BATCH = 100
INTERVAL = "2s"
STEPS = (20, 60)
STEP_LATENCY = "tidegate_step_latency_seconds"
# The histogram's largest finite bucket (tidegate.metrics.STEP_LATENCY).
STEP_BUCKET_MAX = 30.0
GOAL_RSS_MIB = 512
GOAL_STEP_P99 = 2.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the objects ---------------------------------------------------------------------------


def objects(name: str, namespace: str) -> list[dict[str, Any]]:
    labels = {"app": name}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.k8s.io/pause:3.10",
                            "env": [{"name": "VERSION", "value": "1.0.0"}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hostnames": [f"{name}.{namespace}.example.com"],
            "rules": [{"backendRefs": [{"name": name, "port": 80}]}],
        },
    }
    rollout = {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": "ProgressiveRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"name": name, "port": 80},
            "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
            # Pods on 2 cores under this load may take a while: not what is measured.
            "progressDeadlineSeconds": 3600,
            "strategy": {"canary": {"steps": [{"setWeight": w} for w in STEPS]}},
            "analysis": {
                "interval": INTERVAL,
                "failureLimit": 2,
                "metrics": [
                    {"name": "always-ok", "query": "vector(0)", "thresholdRange": {"max": 1}}
                ],
            },
        },
    }
    return [deployment, service, route, rollout]


def placement(n: int, namespaces: int) -> list[tuple[str, str]]:
    """(namespace, name) of every rollout."""
    return [(f"scale-{i % namespaces}", f"app-{i}") for i in range(n)]


def create_all(kubectl: KubectlRunner, where: list[tuple[str, str]]) -> None:
    for namespace in sorted({ns for ns, _ in where}):
        kubectl.check("create", "namespace", namespace)
    batches = [where[i : i + BATCH] for i in range(0, len(where), BATCH)]

    def apply(batch: list[tuple[str, str]]) -> None:
        docs = [obj for ns, name in batch for obj in objects(name, ns)]
        kubectl.check("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(docs))

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(apply, batches))


def change_all(kubectl: KubectlRunner, namespaces: list[str], version: str) -> None:
    """A new pod template on every Deployment the bench made (not tidegate's copies)."""

    def change(namespace: str) -> None:
        kubectl.check(
            "set",
            "env",
            "deployment",
            "-l",
            f"app,!{ROLE_LABEL}",
            "-n",
            namespace,
            f"VERSION={version}",
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(change, namespaces))


# --- what is watched -----------------------------------------------------------------------


def pid_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, user + system, so far; VmRSS in bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss


@dataclass
class RssSampler:
    pid: int
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def run() -> None:
            while not self._stop.wait(0.25):
                self.peak = max(self.peak, pid_stat(self.pid)[1])

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.peak


def phases(custom: client.CustomObjectsApi) -> Counter[str]:
    response: Any = custom.list_cluster_custom_object(
        api.GROUP, api.VERSION, api.PLURAL, _preload_content=False
    )
    items = json.loads(response.data)["items"]
    return Counter(str((o.get("status") or {}).get("phase", "")) for o in items)


def wait_for(
    custom: client.CustomObjectsApi,
    n: int,
    done: Callable[[Counter[str]], bool],
    what: str,
    timeout: float,
) -> float:
    """Poll the rollouts' phases once a second until `done`; seconds it took."""
    began = time.monotonic()
    last_said = 0.0
    while True:
        seen = phases(custom)
        if done(seen):
            return time.monotonic() - began
        waited = time.monotonic() - began
        if waited > timeout:
            raise RuntimeError(f"{what}: not after {timeout:.0f} s; phases {dict(seen)}")
        if waited - last_said >= 15:
            log(f"  waiting for {what}: {dict(seen)}")
            last_said = waited
        time.sleep(1.0)


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram in exposition text."""
    buckets = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
    return sorted(buckets)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """As PromQL's histogram_quantile: linear within the bucket the rank falls in."""
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return math.inf  # beyond the last finite bucket: printed as "over" it
            return lower + (bound - lower) * ((rank - below) / (count - below or 1))
        lower, below = bound, count
    return None


def minus(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Figures:
    n: int
    namespaces: int
    created_s: float = 0.0
    initialized_s: float = 0.0
    rss_idle: int = 0
    rss_peak: int = 0
    cpu_total: float = 0.0
    cpu_change: float = 0.0
    idle_window: float = 0.0
    idle_by_verb: Counter[str] = field(default_factory=Counter)
    idle_by_call: Counter[str] = field(default_factory=Counter)
    idle_lease_requests: int = 0  # leader election's, apart: one replica's, not per rollout
    change_s: float = 0.0
    to_succeeded_s: float | None = None
    failed: int = 0
    phases_at_end: Counter[str] = field(default_factory=Counter)
    steps: float = 0.0
    step_p50: float | None = None
    step_p99: float | None = None
    run_s: float = 0.0


def mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def report(f: Figures) -> str:
    idle_total = sum(f.idle_by_verb.values())
    writes = sum(c for v, c in f.idle_by_verb.items() if v in audit.WRITE_VERBS)
    per_hour = idle_total / f.n / f.idle_window * 3600 if f.idle_window else float("nan")
    by_verb = ", ".join(
        f"{verb} {count / f.idle_window:.3f}/s" for verb, count in sorted(f.idle_by_verb.items())
    )

    def sec(value: float | None) -> str:
        if value is not None and math.isinf(value):
            return f"over {STEP_BUCKET_MAX:.0f} s"
        return "n/a" if value is None else f"{value:.3f} s"

    rows = [
        (
            "rollouts",
            f"{f.n} in {f.namespaces} namespaces, steps 20%/60%, analysis every {INTERVAL}",
        ),
        ("data plane", DATA_PLANE),
        ("created (apply)", f"{f.created_s:.1f} s"),
        ("all Initialized after", f"{f.initialized_s:.1f} s from the first apply"),
        ("operator RSS idle", f"{mib(f.rss_idle)}   (goal < {GOAL_RSS_MIB} MiB)"),
        ("operator RSS peak under load", f"{mib(f.rss_peak)}   (goal < {GOAL_RSS_MIB} MiB)"),
        (
            "operator CPU per rollout",
            f"{f.cpu_total / f.n:.3f} s over the whole run ({f.cpu_total:.1f} s); "
            f"{f.cpu_change / f.n:.3f} s during the change ({f.cpu_change:.1f} s)",
        ),
        (
            f"idle API requests ({f.idle_window:.0f} s)",
            f"{idle_total} in all ({by_verb or 'none'}); {writes} writes; "
            f"{per_hour:.3f} per rollout per hour   (goal 0, 0 writes)",
        ),
        (
            "leader election, idle",
            f"{f.idle_lease_requests} Lease requests (get and update every retry period, "
            "whatever N; not counted above)",
        ),
        ("template change on all N", f"{f.change_s:.1f} s of kubectl set env"),
        (
            "change -> all Succeeded",
            (
                f"{f.to_succeeded_s:.1f} s" + (f" ({f.failed} Failed)" if f.failed else "")
                if f.to_succeeded_s is not None
                else f"not within --change-timeout: phases then {dict(f.phases_at_end)}"
            ),
        ),
        (
            "step latency (operator side)",
            f"p50 {sec(f.step_p50)}, p99 {sec(f.step_p99)} over {f.steps:.0f} steps   "
            f"(goal p99 < {GOAL_STEP_P99:.0f} s)",
        ),
        ("whole run", f"{f.run_s:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)} | {v}" for k, v in rows]
    if f.idle_by_call:
        lines.append(
            "idle requests by call: "
            + "; ".join(f"{c} x{n}" for c, n in f.idle_by_call.most_common())
        )
    return "\n".join(lines)


def run(
    info: EnvironmentInfo, operator: OperatorProcess, args: argparse.Namespace, f: Figures
) -> None:
    kubectl = kubectl_for(info)
    api_client = config.new_client_from_config(config_file=info.kubeconfig)  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api_client)
    pid = operator.process.pid
    audit_file = audit.audit_log(Path(info.state_dir))
    where = placement(f.n, f.namespaces)
    namespaces = sorted({ns for ns, _ in where})

    began = time.monotonic()
    log(f"creating {f.n} rollouts (Deployment, Service, HTTPRoute, ProgressiveRollout) ...")
    create_all(kubectl, where)
    f.created_s = time.monotonic() - began
    log(f"created in {f.created_s:.1f} s; waiting for all Initialized ...")
    wait_for(custom, f.n, lambda p: p["Initialized"] == f.n, "all Initialized", args.timeout)
    f.initialized_s = time.monotonic() - began
    log(f"all {f.n} Initialized after {f.initialized_s:.1f} s; settling {args.settle:.0f} s")
    time.sleep(args.settle)

    log(f"idle: {args.idle:.0f} s (the idle resync is every {IDLE_RESYNC_SECONDS:.0f} s)")
    mark = audit.audit_ids(audit.read_events(audit_file))
    idle_began = time.monotonic()
    time.sleep(args.idle)
    f.rss_idle = pid_stat(pid)[1]
    idle_events = audit.since(mark, audit.read_events(audit_file))
    f.idle_window = time.monotonic() - idle_began
    everything = audit.requests_with_agent(OPERATOR_AGENT, idle_events)
    # The Lease is renewed every retry period whatever the number of rollouts: counted
    # apart, so that the per-rollout figure is what rollouts cost.
    idle = [r for r in everything if not (r.call and r.call.resource == "leases")]
    f.idle_lease_requests = len(everything) - len(idle)
    f.idle_by_verb = audit.count_by_verb(idle)
    f.idle_by_call = audit.count_by_call(idle)
    log(
        f"idle: {len(idle)} requests from the operator for rollouts, "
        f"{f.idle_lease_requests} for its Lease; RSS {mib(f.rss_idle)}"
    )

    steps_before = histogram(operator.metrics_text(), STEP_LATENCY)
    cpu_before = pid_stat(pid)[0]
    sampler = RssSampler(pid)
    sampler.start()
    log(f"changing the pod template of all {f.n} Deployments ...")
    changed = time.monotonic()
    change_all(kubectl, namespaces, "2.0.0")
    f.change_s = time.monotonic() - changed
    log(f"changed in {f.change_s:.1f} s; waiting for all Succeeded ...")

    def finished(p: Counter[str]) -> bool:
        return p["Succeeded"] + p["Failed"] == f.n

    try:
        wait_for(custom, f.n, finished, "all Succeeded", args.change_timeout)
        f.to_succeeded_s = time.monotonic() - changed
    except RuntimeError as error:  # the other figures still hold: printed, and said so
        log(str(error))
    f.rss_peak = max(sampler.stop(), f.rss_idle)
    f.cpu_change = pid_stat(pid)[0] - cpu_before
    f.phases_at_end = phases(custom)
    f.failed = f.phases_at_end["Failed"]
    f.cpu_total = pid_stat(pid)[0]
    steps = minus(histogram(operator.metrics_text(), STEP_LATENCY), steps_before)
    f.steps = steps[-1][1] if steps else 0.0
    f.step_p50, f.step_p99 = quantile(0.5, steps), quantile(0.99, steps)
    api_client.close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", "-n", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--idle", type=float, default=IDLE_RESYNC_SECONDS + 15, help="seconds")
    # Past the rollouts' default 30 s scale-down delay: each user Deployment is scaled to zero
    # that long after its route is accepted, which is not idle yet.
    parser.add_argument("--settle", type=float, default=45.0, help="seconds before idle")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per wait")
    parser.add_argument(
        "--change-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for all Succeeded; past it the figures so far are printed",
    )
    parser.add_argument("--state-dir", type=Path, default=Path.cwd() / ".state" / "bench-scale")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    figures = Figures(n=args.rollouts, namespaces=min(args.namespaces, args.rollouts))
    began = time.monotonic()
    operator: OperatorProcess | None = None
    try:
        log(f"starting the local environment in {args.state_dir} (no gateway; route status) ...")
        info = start_environment(args.state_dir, gateway=False)
        install_crd(kubectl_for(info))
        operator = start_operator(info, operator_log(args.state_dir))
        log(f"operator pid {operator.process.pid}; {DATA_PLANE}")
        run(info, operator, args, figures)
        figures.run_s = time.monotonic() - began
        print(report(figures), flush=True)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the run failed: say where, and what was measured so far
        print(f"the run failed: {error}", file=sys.stderr)
        figures.run_s = time.monotonic() - began
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if operator is not None:
            operator.stop()
        stop_environment(args.state_dir)
        log("environment stopped")


if __name__ == "__main__":
    sys.exit(main())
