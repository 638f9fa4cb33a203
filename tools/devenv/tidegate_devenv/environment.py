"""The whole local environment: control plane, Gateway API CRDs, Prometheus and gateway (or,
without one, the route-status writer)."""

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
    DEFAULT_CONTEXT,
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
# Prometheus scrapes what the target files here name (file_sd): the gateway's demo apps and
# the operators `start_operator` starts.
SCRAPE_TARGETS_DIR = "prometheus-targets"
# Without the gateway: the process that writes route status in its place, its ProcessTable
# name (and so its log, logs/route-status.log), and the file it writes once synced.
# The niceness the data plane (the gateway, with its demo apps, and Prometheus) starts with:
# below 0, as root, it keeps its latency when the machine's cores are shared with much else
# (the e2e tests side by side, starting control planes), as a real data plane runs on cores
# of its own. What the checks measure is then the apps', not the test machine's load.
DATA_PLANE_NICE_ENV = "TIDEGATE_DATA_PLANE_NICE"


def data_plane_nice() -> int:
    return int(os.environ.get(DATA_PLANE_NICE_ENV) or 0)


ROUTE_STATUS = "route-status"
ROUTE_STATUS_READY = "route-status.ready"
ROUTE_STATUS_WAIT = 30.0


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
    # The region's name when this is one cluster of several (`tidegate_devenv.regions`):
    # the `cluster` label of what Prometheus scrapes of it, its kubeconfig's context.
    cluster: str = ""
    # Seconds the gateway waits before applying a change it sees (--route-delay); 0: none.
    route_delay: float = 0.0

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
    route_delay: float = 0.0,
) -> EnvironmentInfo:
    """Start everything in a fresh state directory; on any failure, stop what was started.

    With `kubeconfig`, that cluster (kind, k3d, a real one) is used instead of a local
    control plane; Prometheus and the gateway still run here, watching it. `gateway_seed`
    makes the gateway's weighted choices repeatable (see `gateway.py`); without it the
    gateway takes $TIDEGATE_GATEWAY_SEED, or a random seed it logs.

    `route_delay` > 0 has the gateway apply each HTTPRoute, Service and Pod change that many
    seconds after it sees it (plus a little jitter), as a real gateway lags; 0 (the
    default), at once. Either way it writes each route's status.parents once applied.

    `gateway=False` starts no dev gateway, and so no demo-app processes (the gateway starts
    one per pod template with ready pods, which does not scale to thousands of them): no
    HTTP data plane, `gateway_url` and `gateway_metrics_url` are empty, and Prometheus only
    has what is published to it otherwise. Route status is still written, at once (whatever
    `route_delay`), by a light process watching only HTTPRoutes and Services
    (`tidegate_devenv.statusonly`), so that a controller waiting for its route writes to be
    accepted still progresses. For runs whose analysis needs no traffic, such as the scale
    benchmark and the peers benchmark's fleets.

    Several clusters, each with its own control plane and gateway and one Prometheus for
    all: `tidegate_devenv.regions`.
    """
    began = time.monotonic()
    processes = ProcessTable(state_dir)
    if processes.alive():
        raise StartupError(f"an environment is already running in {state_dir}; stop it first")
    reset_state_dir(state_dir)
    binaries = binaries or find_binaries()
    try:
        parts = start_cluster_parts(
            binaries,
            state_dir,
            processes,
            gateway_api_crd_directory(),
            kubeconfig=kubeconfig,
            gateway_seed=gateway_seed,
            gateway=gateway,
            route_delay=route_delay,
        )
        prometheus_url = start_prometheus(processes, state_dir, [parts.scrape_source()])
        parts.wait_ready(binaries, processes)
        wait_for_prometheus(prometheus_url, processes)
    except BaseException:
        processes.stop_all()
        raise
    info = parts.info(binaries, prometheus_url, round(time.monotonic() - began, 1))
    write_info(info)
    return info


@dataclass(frozen=True)
class ClusterParts:
    """One cluster's share of an environment, as `start_cluster_parts` started it: its
    control plane (or an existing cluster) with the Gateway API CRDs, and its dev gateway,
    or when there is none (both URLs empty) the route-status writer, which says it is
    ready by writing `route_status_ready`."""

    state_dir: Path
    control_plane: ControlPlane
    gateway_url: str
    gateway_metrics_url: str
    cluster: str = ""
    route_delay: float = 0.0
    route_status_ready: Path | None = None

    def scrape_source(self) -> prometheus.ScrapeSource:
        """What Prometheus scrapes of it: the gateway, and the target files in the state
        directory (the gateway's demo apps, the operators `start_operator` registers)."""
        metrics = self.gateway_metrics_url.removeprefix("http://")
        return prometheus.ScrapeSource(
            [metrics] if metrics else [], self.state_dir / SCRAPE_TARGETS_DIR, self.cluster
        )

    def wait_ready(self, binaries: Binaries, processes: ProcessTable) -> None:
        kubectl = KubectlRunner(binaries.kubectl, self.control_plane.kubeconfig)
        kubectl.wait_established()
        if self.gateway_metrics_url:
            wait_until(
                lambda: http_ok(f"{self.gateway_metrics_url}/metrics"),
                "the gateway's /metrics",
                30,
                processes.log_dir / "gateway.log",
            )
        if self.route_status_ready is not None:
            ready = self.route_status_ready
            wait_until(
                ready.exists,
                "the route-status writer's informers to sync",
                ROUTE_STATUS_WAIT,
                processes.log_dir / f"{ROUTE_STATUS}.log",
            )

    def info(self, binaries: Binaries, prometheus_url: str, seconds: float) -> EnvironmentInfo:
        return EnvironmentInfo(
            state_dir=str(self.state_dir),
            kubeconfig=str(self.control_plane.kubeconfig),
            server=self.control_plane.server,
            kubectl=str(binaries.kubectl),
            prometheus_url=prometheus_url,
            gateway_url=self.gateway_url,
            gateway_metrics_url=self.gateway_metrics_url,
            started_in_seconds=seconds,
            cluster=self.cluster,
            route_delay=self.route_delay,
        )


def start_cluster_parts(
    binaries: Binaries,
    state_dir: Path,
    processes: ProcessTable,
    gateway_crds: Path,
    *,
    kubeconfig: Path | None = None,
    gateway_seed: int | None = None,
    gateway: bool = True,
    cluster: str = "",
    route_delay: float = 0.0,
) -> ClusterParts:
    """A control plane in `state_dir` (unless `kubeconfig` names an existing cluster), the
    Gateway API CRDs from `gateway_crds`, and the dev gateway (with `route_delay`, see
    `start_environment`), or with `gateway=False` the route-status writer in its place
    (`tidegate_devenv.statusonly`, no delay); not waiting for any to be ready
    (`ClusterParts.wait_ready`). A `cluster` name names its kubeconfig's context too."""
    if kubeconfig is None:
        context = cluster or DEFAULT_CONTEXT
        control_plane = start_control_plane(binaries, state_dir, processes, context=context)
    else:
        control_plane = ControlPlane(server="", kubeconfig=kubeconfig)
    kubectl = KubectlRunner(binaries.kubectl, control_plane.kubeconfig)
    kubectl.check("apply", "--server-side", "-f", str(gateway_crds))
    (state_dir / SCRAPE_TARGETS_DIR).mkdir(parents=True, exist_ok=True)
    if not gateway:
        ready = state_dir / ROUTE_STATUS_READY
        ready.unlink(missing_ok=True)  # only the process started now may say it is ready
        processes.start(ROUTE_STATUS, route_status_command(control_plane.kubeconfig, ready))
        return ClusterParts(state_dir, control_plane, "", "", cluster, route_status_ready=ready)
    port, metrics_port = free_port(), free_port()
    command = gateway_command(
        control_plane.kubeconfig, state_dir, port, metrics_port, gateway_seed, route_delay
    )
    processes.start("gateway", command, nice=data_plane_nice())
    return ClusterParts(
        state_dir,
        control_plane,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{metrics_port}",
        cluster,
        route_delay,
    )


def start_prometheus(
    processes: ProcessTable, state_dir: Path, sources: list[prometheus.ScrapeSource]
) -> str:
    """Prometheus scraping `sources`, its data in `state_dir`; returns its URL at once
    (`wait_for_prometheus` waits until it is ready)."""
    port = free_port()
    config = state_dir / "prometheus.yml"
    config.write_text(prometheus.render_sources(SCRAPE_INTERVAL, sources))
    processes.start(
        "prometheus",
        prometheus.prometheus_command(
            prometheus.prometheus_binary(),
            config,
            state_dir / "prometheus-data",
            f"127.0.0.1:{port}",
        ),
        nice=data_plane_nice(),
    )
    return f"http://127.0.0.1:{port}"


def wait_for_prometheus(url: str, processes: ProcessTable) -> None:
    wait_until(
        lambda: http_ok(f"{url}/-/ready"),
        "prometheus's /-/ready",
        60,
        processes.log_dir / "prometheus.log",
    )


def write_info(info: EnvironmentInfo) -> None:
    info_path(Path(info.state_dir)).write_text(json.dumps(asdict(info), indent=1))


def gateway_command(
    kubeconfig: Path,
    state_dir: Path,
    port: int,
    metrics_port: int,
    seed: int | None = None,
    route_delay: float = 0.0,
) -> list[str]:
    """The dev gateway's command line."""
    if route_delay < 0:
        raise ValueError(f"a route delay is a number of seconds >= 0, not {route_delay}")
    return [
        sys.executable,
        "-m",
        "tidegate_devenv.gateway",
        f"--kubeconfig={kubeconfig}",
        f"--listen=127.0.0.1:{port}",
        f"--metrics-listen=127.0.0.1:{metrics_port}",
        f"--state-dir={state_dir}",
        *([] if seed is None else [f"--seed={seed}"]),
        *([f"--route-delay={route_delay}"] if route_delay else []),
    ]


def route_status_command(kubeconfig: Path, ready_file: Path) -> list[str]:
    """The route-status writer's command line (for an environment without the gateway)."""
    return [
        sys.executable,
        "-m",
        "tidegate_devenv.statusonly",
        f"--kubeconfig={kubeconfig}",
        f"--ready-file={ready_file}",
    ]


def stop_environment(state_dir: Path) -> None:
    ProcessTable(state_dir).stop_all()
    info_path(state_dir).unlink(missing_ok=True)


def reset_state_dir(state_dir: Path) -> None:
    if state_dir.exists():
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)
