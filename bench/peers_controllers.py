"""The three controllers of the side-by-side benchmark as the runner sees them: how each is
installed and started against the local environment, and how its objects' status reads as
one of a few states. What they are asked to do is in scenario.py.

Each runs out of cluster as the environment's admin, without leader election (Flagger's
default; tidegate's and Argo Rollouts' switched off, so that no one pays for a Lease).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollback_latency import wall_of
from scenario import ARGO, FLAGGER, SCENARIO, TIDEGATE

from tidegate_devenv.cluster import KubectlRunner, free_port
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import install_crd, operator_log, start_operator
from tidegate_devenv.paths import REPO
from tidegate_devenv.processes import ProcessTable, stop_process_group

BUILD_PEERS = REPO / "hack" / "build-peers.sh"

# What a controller's object says, in the runner's words.
READY, PROGRESSING, SUCCEEDED, FAILED = "ready", "progressing", "succeeded", "failed"


def peers_bin() -> Path:
    """Builds the peers when missing (cached after the first time); their directory."""
    out = subprocess.run(["bash", str(BUILD_PEERS), "all"], check=True, capture_output=True)
    return Path(out.stdout.decode().strip().splitlines()[-1])


def _crds(what: str) -> str:
    out = subprocess.run(["bash", str(BUILD_PEERS), what], check=True, capture_output=True)
    return out.stdout.decode().strip()


@dataclass
class Running:
    """A started controller: its pid (for RSS and CPU) and how to stop it."""

    pid: int
    log: Path
    stop_it: Any  # () -> None
    metrics_text: Any = None  # () -> str, tidegate only (its step latency histogram)

    def stop(self) -> None:
        self.stop_it()


@dataclass(frozen=True)
class Controller:
    name: str
    agent: str  # User-Agent prefix in the audit log
    resource: tuple[str, str, str]  # group, version, plural of the object that is watched
    # What its traffic change writes: HTTPRoutes, or ReplicaSets for a replica-ratio canary.
    route_resources: tuple[str, ...]
    settings: str

    def install(self, kubectl: KubectlRunner) -> None:
        if self.name == TIDEGATE:
            install_crd(kubectl)
        elif self.name == FLAGGER:
            kubectl.check("apply", "--server-side", "-f", _crds("flagger-crds"))
        else:
            # The directory is a kustomization of the CRD files.
            kubectl.check("apply", "--server-side", "-k", _crds("argo-rollouts-crds"))
        kubectl.wait_established(timeout=90)

    def start(
        self, info: EnvironmentInfo, state_dir: Path, binaries: Path, client_qps: int | None
    ) -> Running:
        """`client_qps`: the peers' client-side request limit (burst twice that); None keeps
        their defaults. tidegate's client has no such limit."""
        if self.name == TIDEGATE:
            op = start_operator(info, operator_log(state_dir), leader_election=False)
            return Running(op.process.pid, op.log, op.stop, op.metrics_text)
        table = ProcessTable(state_dir)
        if self.name == FLAGGER:
            argv = [
                str(binaries / "flagger"),
                f"-kubeconfig={info.kubeconfig}",
                "-mesh-provider=gatewayapi:v1beta1",
                f"-metrics-server={info.prometheus_url}",
                f"-port={free_port()}",
                "-log-level=info",
            ]
            if client_qps is not None:
                argv += [f"-kubeconfig-qps={client_qps}", f"-kubeconfig-burst={2 * client_qps}"]
        else:
            argv = [
                str(binaries / "rollouts-controller"),
                f"--kubeconfig={info.kubeconfig}",
                "--leader-elect=false",
                f"--healthzPort={free_port()}",
                f"--metricsport={free_port()}",
            ]
            if client_qps is not None:
                argv += [f"--qps={client_qps}", f"--burst={2 * client_qps}"]
        proc = table.start(self.name, argv)
        return Running(
            proc.pid, table.log_dir / f"{self.name}.log", lambda: stop_process_group(proc)
        )

    def state(self, obj: dict[str, Any], stable_hash: str | None = None) -> str:
        """READY (settled on a version), PROGRESSING, SUCCEEDED or FAILED. For Argo
        Rollouts, SUCCEEDED means a new stable ReplicaSet: `stable_hash` is the old one."""
        status = obj.get("status") or {}
        phase = str(status.get("phase", ""))
        if self.name in (TIDEGATE, FLAGGER):
            return {
                "Initialized": READY,
                "Succeeded": SUCCEEDED,
                "Failed": FAILED,
            }.get(phase, PROGRESSING)
        if status.get("abort"):
            return FAILED
        settled = (
            phase == "Healthy"
            and status.get("stableRS")
            and status.get("stableRS") == status.get("currentPodHash")
        )
        if not settled:
            return PROGRESSING
        return SUCCEEDED if stable_hash and status["stableRS"] != stable_hash else READY

    def failing_measurement(self, obj: dict[str, Any], log: Path, after: float) -> float | None:
        """When the controller recorded its first failing measurement at or after `after`:
        tidegate's status.metrics[].measuredAt; Flagger's log line that halts advancement
        (it keeps no time in its status); Argo Rollouts' AnalysisRun measurement finishedAt
        (whole seconds), read by the runner and passed in as `obj`."""
        if self.name == TIDEGATE:
            times = [
                wall_of(m["measuredAt"])
                for m in (obj.get("status") or {}).get("metrics") or []
                if m.get("phase") != "Passed" and m.get("measuredAt")
            ]
        elif self.name == FLAGGER:
            times = [t for t, msg in flagger_log(log) if msg.startswith("Halt ")]
        else:
            times = [
                wall_of(m["finishedAt"])
                for metric in (obj.get("status") or {}).get("metricResults") or []
                for m in metric.get("measurements") or []
                if m.get("phase") == "Failed" and m.get("finishedAt")
            ]
        later = [t for t in times if t >= after]
        return min(later, default=None)


def flagger_log(log: Path) -> Iterable[tuple[float, str]]:
    """(time, message) of Flagger's JSON log lines."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            yield wall_of(entry["ts"]), str(entry.get("msg", ""))


CONTROLLERS = {
    TIDEGATE: Controller(
        TIDEGATE,
        "tidegate/",
        ("tidegate.io", "v1alpha1", "progressiverollouts"),
        ("httproutes",),
        "in-repo operator (python -m tidegate run), --no-leader-election",
    ),
    FLAGGER: Controller(
        FLAGGER,
        "flagger/",
        ("flagger.app", "v1beta1", "canaries"),
        ("httproutes",),
        "v1.36.1, -mesh-provider=gatewayapi:v1beta1, -metrics-server=<local Prometheus>, "
        "no leader election (its default)",
    ),
    ARGO: Controller(
        ARGO,
        "rollouts-controller/",
        ("argoproj.io", "v1alpha1", "rollouts"),
        ("replicasets",),
        "v1.10.1, --leader-elect=false, basic canary (no traffic-router plugin)",
    ),
}

NAME = SCENARIO.name
