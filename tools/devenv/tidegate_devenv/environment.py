"""The whole local environment: control plane, Gateway API CRDs, Prometheus and gateway."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tidegate_devenv import prometheus
from tidegate_devenv.binaries import Binaries, find_binaries, gateway_api_crd_directory
from tidegate_devenv.cluster import (
    ControlPlane,
    KubectlRunner,
    StartupError,
    free_port,
    http_ok,
    start_control_plane,
)
from tidegate_devenv.processes import ProcessTable
from tidegate_devenv.waiting import wait_until

SCRAPE_INTERVAL = "1s"


def default_state_dir() -> Path:
    return Path(os.environ.get("TIDEGATE_STATE_DIR", Path.cwd() / ".state" / "dev"))


@dataclass(frozen=True)
class EnvironmentInfo:
    state_dir: str
    kubeconfig: str
    server: str
    kubectl: str
    prometheus_url: str
    gateway_url: str
    gateway_metrics_url: str
    started_in_seconds: float

    def exports(self) -> str:
        return "\n".join(
            [
                f"export KUBECONFIG={self.kubeconfig}",
                f"export TIDEGATE_PROMETHEUS_URL={self.prometheus_url}",
                f"export TIDEGATE_GATEWAY_URL={self.gateway_url}",
                f"export PATH={Path(self.kubectl).parent}:$PATH",
            ]
        )


def info_path(state_dir: Path) -> Path:
    return state_dir / "environment.json"


def load_info(state_dir: Path) -> EnvironmentInfo | None:
    path = info_path(state_dir)
    return EnvironmentInfo(**json.loads(path.read_text())) if path.exists() else None


def start_environment(
    state_dir: Path,
    *,
    kubeconfig: Path | None = None,
    binaries: Binaries | None = None,
    gateway_seed: int | None = None,
    gateway: bool = True,
) -> EnvironmentInfo:
    """Start everything in a fresh state directory; on any failure, stop what was started.

    With `kubeconfig`, that cluster (kind, k3d, a real one) is used instead of a local
    control plane; Prometheus and the gateway still run here, watching it. `gateway_seed`
    makes the gateway's weighted choices repeatable (see `gateway.py`); without it the
    gateway takes $TIDEGATE_GATEWAY_SEED, or a random seed it logs.

    `gateway=False` starts no dev gateway, and so no demo-app processes (the gateway starts
    one per pod template with ready pods, which does not scale to thousands of them): no
    HTTP data plane, `gateway_url` and `gateway_metrics_url` are empty, and Prometheus only
    has what is published to it otherwise. For runs whose analysis needs no traffic, such as
    the scale benchmark.
    """
    began = time.monotonic()
    processes = ProcessTable(state_dir)
    if processes.alive():
        raise StartupError(f"an environment is already running in {state_dir}; stop it first")
    _reset(state_dir)
    binaries = binaries or find_binaries()
    try:
        if kubeconfig is None:
            control_plane = start_control_plane(binaries, state_dir, processes)
        else:
            control_plane = ControlPlane(server="", kubeconfig=kubeconfig)
        kubectl = KubectlRunner(binaries.kubectl, control_plane.kubeconfig)
        kubectl.check("apply", "--server-side", "-f", str(gateway_api_crd_directory()))

        gateway_port, gateway_metrics_port, prometheus_port = free_port(), free_port(), free_port()
        targets_dir = state_dir / "prometheus-targets"
        targets_dir.mkdir(parents=True, exist_ok=True)
        config = state_dir / "prometheus.yml"
        config.write_text(
            prometheus.render_config(
                SCRAPE_INTERVAL,
                [f"127.0.0.1:{gateway_metrics_port}"] if gateway else [],
                targets_dir,
            )
        )
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        processes.start(
            "prometheus",
            prometheus.prometheus_command(
                prometheus.prometheus_binary(),
                config,
                state_dir / "prometheus-data",
                f"127.0.0.1:{prometheus_port}",
            ),
        )
        if gateway:
            _start_gateway(
                processes,
                control_plane.kubeconfig,
                state_dir,
                gateway_seed,
                gateway_port,
                gateway_metrics_port,
            )
        kubectl.check("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        wait_until(
            lambda: http_ok(f"{prometheus_url}/-/ready"),
            "prometheus's /-/ready",
            60,
            processes.log_dir / "prometheus.log",
        )
        if gateway:
            wait_until(
                lambda: http_ok(f"http://127.0.0.1:{gateway_metrics_port}/metrics"),
                "the gateway's /metrics",
                30,
                processes.log_dir / "gateway.log",
            )
    except BaseException:
        processes.stop_all()
        raise
    info = EnvironmentInfo(
        state_dir=str(state_dir),
        kubeconfig=str(control_plane.kubeconfig),
        server=control_plane.server,
        kubectl=str(binaries.kubectl),
        prometheus_url=prometheus_url,
        gateway_url=f"http://127.0.0.1:{gateway_port}" if gateway else "",
        gateway_metrics_url=f"http://127.0.0.1:{gateway_metrics_port}" if gateway else "",
        started_in_seconds=round(time.monotonic() - began, 1),
    )
    info_path(state_dir).write_text(json.dumps(asdict(info), indent=1))
    return info


def _start_gateway(
    processes: ProcessTable,
    kubeconfig: Path,
    state_dir: Path,
    seed: int | None,
    port: int,
    metrics_port: int,
) -> None:
    processes.start(
        "gateway",
        [
            sys.executable,
            "-m",
            "tidegate_devenv.gateway",
            f"--kubeconfig={kubeconfig}",
            f"--listen=127.0.0.1:{port}",
            f"--metrics-listen=127.0.0.1:{metrics_port}",
            f"--state-dir={state_dir}",
            *([] if seed is None else [f"--seed={seed}"]),
        ],
    )


def stop_environment(state_dir: Path) -> None:
    ProcessTable(state_dir).stop_all()
    info_path(state_dir).unlink(missing_ok=True)


def _reset(state_dir: Path) -> None:
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
