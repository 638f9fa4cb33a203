"""How fast a bad canary is rolled back, measured on the local environment under real load.

Each run rolls a canary that fails half its requests out in a namespace of its own, with
failureLimit 1 so the first failing measurement rolls it back, and prints:

  (a) from the failing measurement (its status.metrics[].measuredAt) to the moment a watch on
      this machine sees the HTTPRoute give the canary 0%  (goal: under 1 s);
  (b) from the first 5xx the load generator got to 99% on stable, from causally ordered
      events (causal.py, as in bench/peers.py): the route write as the gateway applies it,
      then the first 1 s window from there on from which on under 1% of the responses come
      from the canary. So (b) is never shorter than the failing measurement it waits for.
      The gateway's own part, from the write (as the API server's audit log has it) to
      applying it, is printed apart.

Only prints; nothing is asserted. Everything started is torn down at the end.

    .venv/bin/python bench/rollback_latency.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from causal import applied_at, first_write, rollback
from kubernetes import client, config

from tidegate import api
from tidegate_devenv import audit
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.kubewatch import HTTPROUTE_GROUP, HTTPROUTE_PLURAL, HTTPROUTE_VERSION, Informer
from tidegate_devenv.operator_process import (
    OperatorProcess,
    install_crd,
    kubectl_for,
    operator_log,
    start_operator,
)
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.routing import backend_weight
from tidegate_devenv.traffic import LiveLoad
from tidegate_devenv.waiting import wait_until_async

NAME = "shop"
STABLE_VERSION = "1.0.0"
BAD_VERSION = "1.2.0"
RPS = 50.0
# Load kept on after the rollback, so (b) sees that the canary share stays down.
TAIL_SECONDS = 3.0
TIMEOUT = 120.0


@dataclass
class Watched:
    """Objects as a watch delivered them, each with time.time() at arrival."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    async def wait_for(self, what: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first object delivered (before or after this call) that passes `test`."""

        async def found() -> dict[str, Any] | None:
            return next((obj for _, obj in self.events if test(obj)), None)

        # Polled: the arrival times recorded by `watch` are what is measured, not this.
        found_obj = await wait_until_async(found, what, TIMEOUT, interval=0.05)
        assert found_obj is not None
        return found_obj


@dataclass(frozen=True)
class RunResult:
    measurement_to_route: float  # (a)
    errors_to_stable: float | None  # (b)
    errors_to_measurement: float | None  # first 5xx -> failing measurement: mostly waiting
    write_to_applied: float | None  # the route write (API server) -> applied at the gateway
    applied_to_stable: float | None  # applied at the gateway -> 99% on stable


def wall_of(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def watching(
    api_client: client.ApiClient, resource: tuple[str, str, str], namespace: str, into: Watched
) -> Informer:
    """An informer that records each version of this run's object as it arrives."""

    def changed() -> None:
        obj = informer.items.get((namespace, NAME))
        if obj is not None and (not into.events or into.events[-1][1] != obj):
            into.events.append((time.time(), obj))

    lister = client.CustomObjectsApi(api_client).list_cluster_custom_object
    informer = Informer(resource[2], lister, changed, resource)
    return informer


def manifests(host: str) -> str:
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [host]  # every run's route of its own
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["analysis"]["failureLimit"] = 1
    return yaml.safe_dump_all([*app, rollout])


def phase_of(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase", ""))


async def one_run(info: EnvironmentInfo, kubectl: KubectlRunner, index: int) -> RunResult:
    namespace = f"bench-{index}"
    host = f"shop.{namespace}.example.com"
    await asyncio.to_thread(kubectl.check, "create", "namespace", namespace)
    await asyncio.to_thread(
        kubectl.check, "apply", "--server-side", "-n", namespace, "-f", "-", stdin=manifests(host)
    )
    api_client = config.new_client_from_config(config_file=info.kubeconfig)  # type: ignore[no-untyped-call]
    routes, rollouts = Watched(), Watched()
    load = LiveLoad(info.gateway_url, host, rps=RPS)
    route_resource = (HTTPROUTE_GROUP, HTTPROUTE_VERSION, HTTPROUTE_PLURAL)
    rollout_resource = (api.GROUP, api.VERSION, api.PLURAL)
    tasks = [
        asyncio.create_task(watching(api_client, route_resource, namespace, routes).run()),
        asyncio.create_task(watching(api_client, rollout_resource, namespace, rollouts).run()),
    ]
    try:
        await rollouts.wait_for("the rollout Initialized", lambda o: phase_of(o) == "Initialized")
        tasks.append(asyncio.create_task(load.run()))
        await load.wait_for(STABLE_VERSION, 30)
        changed = time.monotonic()
        await asyncio.to_thread(
            kubectl.check,
            "set",
            "env",
            f"deployment/{NAME}",
            "-n",
            namespace,
            f"VERSION={BAD_VERSION}",
            "ERROR_RATE=0.5",
        )
        failed = await rollouts.wait_for(
            "the canary rolled back",
            lambda o: phase_of(o) == "Failed" and o["status"].get("canaryRevision") is not None,
        )
        await asyncio.sleep(TAIL_SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(api_client.close)
    await asyncio.to_thread(kubectl.run, "delete", "namespace", namespace, "--wait=false")

    failing = [m for m in failed["status"]["metrics"] if m.get("phase") != "Passed"]
    measured = min(wall_of(m["measuredAt"]) for m in failing)
    canary = f"{NAME}-canary"
    route_zero = next(
        at for at, route in routes.events if at >= measured and backend_weight(route, canary) == 0
    )
    # Load samples are on the monotonic clock, the rest on the wall clock.
    offset = time.time() - time.monotonic()
    mine = audit.requests_with_agent(
        "tidegate/", audit.read_events(audit.audit_log(Path(info.state_dir)))
    )
    write = first_write(mine, namespace, ["httproutes"], measured)
    applied = applied_at(gateway_plans(info, namespace), NAME, BAD_VERSION, measured)
    events = rollback(load.samples, offset, changed, BAD_VERSION, measured, write, applied)
    if events is None:
        raise RuntimeError("the load generator saw no 5xx from the bad canary")
    figures = events.figures()
    return RunResult(
        measurement_to_route=route_zero - measured,
        errors_to_stable=figures["errors_to_stable"],
        errors_to_measurement=figures["errors_to_measurement"],
        write_to_applied=figures["write_to_applied"],
        applied_to_stable=figures["applied_to_stable"],
    )


def gateway_plans(info: EnvironmentInfo, namespace: str) -> list[dict[str, Any]]:
    """The gateway's record of when each route's version shares changed (GET /plans)."""
    url = f"{info.gateway_metrics_url}/plans?namespace={namespace}"
    with urllib.request.urlopen(url, timeout=5) as response:
        plans: list[dict[str, Any]] = json.loads(response.read())
    return plans


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def describe(index: int, r: RunResult) -> str:
    return (
        f"run {index}: (a) failing measurement -> HTTPRoute canary 0%: "
        f"{seconds(r.measurement_to_route)}; (b) first 5xx -> 99% on stable: "
        f"{seconds(r.errors_to_stable)}  [first 5xx -> failing measurement "
        f"{seconds(r.errors_to_measurement)}; route write -> applied at the gateway "
        f"{seconds(r.write_to_applied)}; applied -> 99% on stable "
        f"{seconds(r.applied_to_stable)}]"
    )


def median(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return seconds(statistics.median(known)) if known else "n/a"


async def bench(info: EnvironmentInfo, kubectl: KubectlRunner, runs: int) -> None:
    results = []
    for index in range(1, runs + 1):
        result = await one_run(info, kubectl, index)
        print(describe(index, result), flush=True)
        results.append(result)
    print(
        f"median of {runs}: (a) {median([r.measurement_to_route for r in results])} "
        f"(goal < 1 s); (b) {median([r.errors_to_stable for r in results])}; "
        f"of which the gateway's propagation {median([r.write_to_applied for r in results])}",
        flush=True,
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--state-dir", type=Path, default=Path.cwd() / ".state" / "bench")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    operator: OperatorProcess | None = None
    try:
        print(f"starting the local environment in {args.state_dir} ...", flush=True)
        info = start_environment(args.state_dir)
        kubectl = kubectl_for(info)
        install_crd(kubectl)
        operator = start_operator(info, operator_log(args.state_dir))
        interval = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())["spec"]["analysis"]
        print(
            f"load {RPS:.0f} requests/s; analysis every {interval['interval']}, failureLimit 1;"
            f" {args.runs} runs",
            flush=True,
        )
        asyncio.run(bench(info, kubectl, args.runs))
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if operator is not None:
            operator.stop()
        stop_environment(args.state_dir)
        print("environment stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
