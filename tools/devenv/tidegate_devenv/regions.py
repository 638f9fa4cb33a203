"""Several independent clusters ("regions") on this machine, for multi-cluster waves
(docs/waves.md): each region is a control plane of its own (etcd, API server, controller
manager, scheduler, kwok nodes, PKI) with its own dev gateway; one Prometheus scrapes them
all, every series labelled cluster="<region>".

    info = start_regions(state_dir)                  # regions a, b, c
    write_reader_secrets(info, "default")            # tidegate_devenv.readers
    a = info.region("a")                             # an EnvironmentInfo, as for one cluster:
    operator = start_operator(a, log)                # start_operator, kubectl_for, ...
    stop_apiserver(a)                                # region a unreachable ...
    start_apiserver(a)                               # ... and back, same address and keys
    stop_regions(state_dir)

Region `a` lives in `<state_dir>/a` (its processes.json, logs, PKI, kubeconfigs and an
environment.json of its own), the shared Prometheus in `<state_dir>`, and the whole in
`<state_dir>/regions.json`. Each region's kubeconfig names its context after the region, so
KUBECONFIG=a:b:c works with `kubectl --context b`.
"""

from __future__ import annotations

import json
import re
import string
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tidegate_devenv.binaries import Binaries, find_binaries, gateway_api_crd_directory
from tidegate_devenv.cluster import APISERVER, KubectlRunner, StartupError, wait_for_apiserver
from tidegate_devenv.environment import (
    ClusterParts,
    EnvironmentInfo,
    info_path,
    reset_state_dir,
    start_cluster_parts,
    start_prometheus,
    wait_for_prometheus,
    write_info,
)
from tidegate_devenv.processes import ProcessTable
from tidegate_devenv.waiting import wait_until

DEFAULT_NAMES = ("a", "b", "c")
# A region's name is its directory, its kubeconfig context, its `cluster` label and part of
# Secret names (`<name>-reader`): a DNS label keeps it valid in all of them.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class RegionsInfo:
    """What `start_regions` started, as written to `<state_dir>/regions.json`."""

    state_dir: str
    prometheus_url: str  # the one Prometheus, scraping every region with `cluster`
    kubectl: str
    regions: list[EnvironmentInfo]  # in the order of the names given
    started_in_seconds: float

    @property
    def names(self) -> list[str]:
        return [region.cluster for region in self.regions]

    def region(self, name: str) -> EnvironmentInfo:
        """Region `name` as an environment of its own: its API server, gateway and state
        directory, the shared Prometheus; usable wherever an EnvironmentInfo is."""
        for region in self.regions:
            if region.cluster == name:
                return region
        raise KeyError(f"no region {name!r}; the regions are {', '.join(self.names)}")

    def exports(self) -> str:
        kubeconfigs = ":".join(region.kubeconfig for region in self.regions)
        return "\n".join(
            [
                f"# regions {', '.join(self.names)}: kubectl --context <region>",
                f"export KUBECONFIG={kubeconfigs}",
                f"export TIDEGATE_PROMETHEUS_URL={self.prometheus_url}",
                *(
                    f"export TIDEGATE_GATEWAY_URL_{region.cluster.upper().replace('-', '_')}"
                    f"={region.gateway_url}"
                    for region in self.regions
                ),
                f"export PATH={Path(self.kubectl).parent}:$PATH",
            ]
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RegionsInfo:
        raw: dict[str, Any] = json.loads(text)
        regions = [EnvironmentInfo(**region) for region in raw.pop("regions")]
        return cls(regions=regions, **raw)


def regions_info_path(state_dir: Path) -> Path:
    return state_dir / "regions.json"


def load_regions(state_dir: Path) -> RegionsInfo | None:
    path = regions_info_path(state_dir)
    return RegionsInfo.from_json(path.read_text()) if path.exists() else None


def region_names(count: int) -> tuple[str, ...]:
    """The first `count` regions: a, b, c, ..."""
    if not 1 <= count <= len(string.ascii_lowercase):
        raise ValueError(f"between 1 and 26 regions, not {count}")
    return tuple(string.ascii_lowercase[:count])


def check_names(names: tuple[str, ...] | list[str]) -> None:
    if not names:
        raise ValueError("no region names")
    if len(set(names)) != len(names):
        raise ValueError(f"region names repeat: {', '.join(names)}")
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"region name {name!r} is not a short DNS label (a-z, 0-9, -)")


def start_regions(
    state_dir: Path,
    names: tuple[str, ...] | list[str] = DEFAULT_NAMES,
    *,
    binaries: Binaries | None = None,
    gateway_seed: int | None = None,
    route_delay: float = 0.0,
) -> RegionsInfo:
    """Start the regions (at once, each in a thread of its own: starting one is mostly
    waiting on its processes) and then the Prometheus for all; in a fresh state directory.
    Each region's gateway applies changes `route_delay` seconds after it sees them (see
    `start_environment`). On any failure, stop everything started."""
    check_names(names)
    began = time.monotonic()
    if _running(state_dir):
        raise StartupError(f"an environment is already running in {state_dir}; stop it first")
    reset_state_dir(state_dir)
    binaries = binaries or find_binaries()
    gateway_crds = gateway_api_crd_directory()  # once: it may run the build script

    def start(name: str) -> ClusterParts:
        region_dir = state_dir / name
        region_dir.mkdir()
        processes = ProcessTable(region_dir)
        parts = start_cluster_parts(
            binaries,
            region_dir,
            processes,
            gateway_crds,
            gateway_seed=gateway_seed,
            cluster=name,
            route_delay=route_delay,
        )
        parts.wait_ready(binaries, processes)
        return parts

    shared = ProcessTable(state_dir)
    try:
        # Leaving the block waits for every region, failed or not, so that the clean-up
        # below finds all the processes recorded.
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            started = [pool.submit(start, name) for name in names]
            parts = [future.result() for future in started]
        prometheus_url = start_prometheus(
            shared, state_dir, [part.scrape_source() for part in parts]
        )
        wait_for_prometheus(prometheus_url, shared)
    except BaseException:
        stop_regions(state_dir)
        raise
    seconds = round(time.monotonic() - began, 1)
    regions = [part.info(binaries, prometheus_url, seconds) for part in parts]
    for region in regions:
        write_info(region)  # so that `tidegate-dev env --state-dir <state>/a` works too
    info = RegionsInfo(str(state_dir), prometheus_url, str(binaries.kubectl), regions, seconds)
    regions_info_path(state_dir).write_text(info.to_json())
    return info


def _region_tables(state_dir: Path) -> list[ProcessTable]:
    """The process tables of the regions under `state_dir` (whatever regions.json says:
    a start that failed half-way wrote none)."""
    if not state_dir.is_dir():
        return []
    return [
        ProcessTable(directory)
        for directory in sorted(state_dir.iterdir())
        if (directory / "processes.json").is_file()
    ]


def _running(state_dir: Path) -> bool:
    return any(table.alive() for table in [ProcessTable(state_dir), *_region_tables(state_dir)])


def stop_regions(state_dir: Path) -> None:
    """Stop every region and the shared Prometheus; safe to call twice."""
    for table in _region_tables(state_dir):
        table.stop_all()
        info_path(table.state_dir).unlink(missing_ok=True)
    ProcessTable(state_dir).stop_all()
    regions_info_path(state_dir).unlink(missing_ok=True)


def stop_apiserver(region: EnvironmentInfo, timeout: float = 5) -> None:
    """Stop the region's kube-apiserver, and only it: its address refuses connections until
    `start_apiserver`, while etcd, the controllers, kwok and the gateway keep running (and
    retrying), as when a region's API is cut off.

    It stops listening at once on SIGTERM; with its clients still connected it has been
    seen not to exit within seconds, so it is killed after `timeout` seconds. This returns
    once it is gone, so that `start_apiserver` finds its port free."""
    ProcessTable(Path(region.state_dir)).stop(APISERVER, timeout)


def start_apiserver(region: EnvironmentInfo, timeout: float = 60) -> None:
    """Start the kube-apiserver `stop_apiserver` stopped, with the same command line (its
    port, certificates, service-account keys and etcd), and wait until it is ready and its
    nodes can take pods again.

    While the API server was away, kwok could not renew the nodes' leases: the node
    controller may have marked them NotReady and tainted them (`node.kubernetes.io/...`),
    and new pods would stay Pending until kwok's next heartbeats clear that."""
    processes = ProcessTable(Path(region.state_dir))
    processes.start_again(APISERVER)
    wait_for_apiserver(region.server, Path(region.state_dir), processes, timeout)
    kubectl = KubectlRunner(Path(region.kubectl), Path(region.kubeconfig))
    wait_until(
        lambda: nodes_schedulable(json.loads(kubectl.check("get", "nodes", "-o", "json"))),
        f"region {region.cluster}'s nodes Ready and untainted",
        timeout,
    )


def nodes_schedulable(nodes: dict[str, Any]) -> bool:
    """Whether every node (of a `kubectl get nodes -o json`) is Ready, with none of the
    taints the node controller puts on a node it has not heard from."""
    for node in nodes.get("items") or []:
        conditions = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
        taints = node.get("spec", {}).get("taints") or []
        if conditions.get("Ready") != "True":
            return False
        if any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints):
            return False
    return bool(nodes.get("items"))
