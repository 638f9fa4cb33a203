"""The operator as a subprocess of a local environment, and small helpers around rollouts.

For the demo, the benchmark and end-to-end tests:

    info = start_environment(state_dir)
    operator = start_operator(info, operator_log(state_dir))  # once /readyz answers 200
    try:
        kubectl = kubectl_for(info)
        status = wait_for_phase(kubectl, "demo", "shop", {"Initialized"}, timeout=60)
        print(operator.reconciles())
    finally:
        operator.stop()
        stop_environment(state_dir)

`start_operator` is the one way the operator is launched here; it raises (with the log's
tail) when the operator does not become ready. `OperatorProcess.stop` stops the operator's
whole process group and is safe to call twice. `read_status` and `wait_for_phase` go through
kubectl, so they can be called from plain (non-async) code.

Operators run with leader election, as deployed. Their Lease is in the first namespace they
watch (a test's own, deleted with it), so that tests never wait on each other's Lease; each
has an identity of its own (`OperatorProcess.identity`), which is also in its user agent.
Two started on the same namespace share the Lease: one acts, the other stands by.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tidegate_devenv.cluster import KubectlRunner, StartupError, free_port, http_ok
from tidegate_devenv.container import container_argv, inline_kubeconfig, operator_image
from tidegate_devenv.environment import SCRAPE_TARGETS_DIR, EnvironmentInfo
from tidegate_devenv.paths import CRD_DIR
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.prometheus import CLUSTER_LABEL
from tidegate_devenv.waiting import wait_until

READY_TIMEOUT = 60.0
# Long enough for kopf to finish its cleanup handlers on SIGTERM.
STOP_TIMEOUT = 10.0
RECONCILES = "tidegate_reconciles_total"
LEADER = "tidegate_leader"
NOTIFICATIONS = "tidegate_notifications_total"


def install_crd(kubectl: KubectlRunner) -> None:
    """Apply tidegate's CRDs from this checkout (ProgressiveRollout, MetricTemplate,
    ClusterMetricTemplate) and wait until they are served."""
    # Forced: the checkout's CRDs win over a Helm install's copy left in the cluster (the
    # chart keeps its CRDs on uninstall), whatever order the tests ran in.
    kubectl.check("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kubectl.wait_established(
        "progressiverollouts.tidegate.io",
        "metrictemplates.tidegate.io",
        "clustermetrictemplates.tidegate.io",
    )


def kubectl_for(info: EnvironmentInfo) -> KubectlRunner:
    return KubectlRunner(Path(info.kubectl), Path(info.kubeconfig))


def operator_log(state_dir: Path) -> Path:
    return state_dir / "logs" / "operator.log"


@dataclass(frozen=True)
class OperatorProcess:
    """A running `tidegate run`: its process (a test may kill it), its health server, its log."""

    process: subprocess.Popen[bytes]
    health_url: str  # http://host:port of --health-listen: /healthz, /readyz
    log: Path
    identity: str = ""  # its --leader-election-identity, also in its user agent
    metrics_url: str = ""  # http://host:port of --metrics-listen: /metrics
    scrape_file: Path | None = None  # its entry for the environment's Prometheus

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=2) as response:
            text: str = response.read().decode()
            return text

    def _sample(self, name: str, **labels: str) -> float | None:
        for family in text_string_to_metric_families(self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def reconciles(self, result: str = "ok") -> int:
        """tidegate_reconciles_total{result=...} from /metrics: reconciles this process ran.

        Raises OSError (URLError) when nothing answers, as when the operator is dead.
        """
        # None: no reconcile with that result yet (the labelled counter does not exist).
        return int(self._sample(RECONCILES, result=result) or 0)

    def notifications(self, provider: str, result: str) -> float:
        """tidegate_notifications_total{provider, result} from /metrics (0 before any)."""
        return self._sample(NOTIFICATIONS, provider=provider, result=result) or 0.0

    def leading(self) -> bool:
        """tidegate_leader from /metrics: whether this process is the one that acts.

        Raises OSError (URLError) when nothing answers, as when the operator is dead.
        """
        return self._sample(LEADER) == 1

    def stop(self) -> None:
        """SIGTERM the operator's process group, SIGKILL what is left after STOP_TIMEOUT;
        and Prometheus no longer scrapes it."""
        stop_operator(self.process)
        if self.scrape_file is not None:
            self.scrape_file.unlink(missing_ok=True)


def start_operator(
    info: EnvironmentInfo,
    log: Path,
    *,
    prometheus_url: str | None = None,
    namespaces: Sequence[str] = (),
    kubeconfig: Path | None = None,
    timeout: float = READY_TIMEOUT,
    leader_election: bool = True,
    lease_namespace: str | None = None,
    notifications_secret: str | None = None,
    env: Mapping[str, str] | None = None,
) -> OperatorProcess:
    """Start `python -m tidegate run` against the environment's cluster and wait for /readyz.

    `prometheus_url` defaults to the environment's Prometheus and `kubeconfig` to its admin
    one (pass another to run as another identity); without `namespaces` it watches all of
    them. The process runs in a session of its own and appends to `log`.

    With `leader_election` (as deployed), its Lease is `tidegate-leader` in
    `lease_namespace`, by default the first of `namespaces` (else `default`). Ready means
    watching, not leading: a second operator on the same Lease is ready as a standby.

    For one region of several (`tidegate_devenv.regions`), pass that region's info
    (`RegionsInfo.region(name)`): the operator runs against its API server, and the shared
    Prometheus scrapes it with the region's `cluster` label.

    `notifications_secret` (`NAMESPACE/NAME`, e.g. a test's own namespace) is the Secret of
    the providers spec.notifications names; by default the operator's own default
    (`tidegate-notifications` in $POD_NAMESPACE, else `default`).

    `env` is added to the process's environment (for instance a failpoint,
    `tidegate.failpoints`).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    health = f"127.0.0.1:{free_port()}"
    metrics_listen = f"127.0.0.1:{free_port()}"
    identity = f"dev-{uuid.uuid4().hex[:8]}"
    election = [f"--leader-election-identity={identity}"]
    if not leader_election:
        election.append("--no-leader-election")
    else:
        lease_namespace = lease_namespace or (namespaces[0] if namespaces else None)
        if lease_namespace:
            election.append(f"--leader-election-namespace={lease_namespace}")
    argv = [
        sys.executable,
        "-m",
        "tidegate",
        "run",
        "--prometheus-url",
        prometheus_url or info.prometheus_url,
        "--health-listen",
        health,
        "--metrics-listen",
        metrics_listen,
        *(f"--namespace={namespace}" for namespace in namespaces),
        *election,
        *([f"--notifications-secret={notifications_secret}"] if notifications_secret else []),
    ]
    process_env = {**os.environ, **(env or {}), "KUBECONFIG": str(kubeconfig or info.kubeconfig)}
    image = operator_image()
    if image is not None:  # the image, as the chart runs it (tidegate_devenv.container)
        inlined = inline_kubeconfig(
            Path(kubeconfig or info.kubeconfig), log.parent / f"{identity}.kubeconfig"
        )
        argv = container_argv(image, inlined, argv[3:], env or {}, identity)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=process_env,
        )
    scrape_file = _register_scrape_target(info, identity, metrics_listen)
    operator = OperatorProcess(
        proc, f"http://{health}", log, identity, f"http://{metrics_listen}", scrape_file
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise StartupError(f"the operator exited with code {proc.returncode}; see {log}")
        return http_ok(f"{operator.health_url}/readyz")

    try:
        wait_until(ready, "the operator's /readyz", timeout, log)
    except BaseException:
        operator.stop()
        raise
    return operator


SCRAPE_JOB = "tidegate"


def _register_scrape_target(info: EnvironmentInfo, identity: str, address: str) -> Path | None:
    """Have the environment's Prometheus scrape the operator's /metrics, as a ServiceMonitor
    would in a cluster (job="tidegate"); in an environment of several regions, with the
    `cluster` label of the region it runs for.

    The file is in the environment's file_sd directory (`SCRAPE_TARGETS_DIR`), and there
    only while the operator runs."""
    targets = Path(info.state_dir) / SCRAPE_TARGETS_DIR
    if not targets.is_dir():
        return None
    labels = {"job": SCRAPE_JOB, "identity": identity}
    if info.cluster:
        labels[CLUSTER_LABEL] = info.cluster
    entry = [{"targets": [address], "labels": labels}]
    path = targets / f"operator-{identity}.json"
    partial = path.with_suffix(".tmp")  # Prometheus reads *.json only: never a half file
    partial.write_text(json.dumps(entry))
    os.replace(partial, path)
    return path


def stop_operator(operator: OperatorProcess | subprocess.Popen[bytes]) -> None:
    """Stop an operator (or its Popen) with its process group; safe to call twice."""
    process = operator.process if isinstance(operator, OperatorProcess) else operator
    stop_process_group(process, STOP_TIMEOUT)


def read_rollout(kubectl: KubectlRunner, namespace: str, name: str) -> dict[str, Any] | None:
    """The ProgressiveRollout as a dict, or None when it does not exist (or kubectl failed)."""
    result = kubectl.run("get", "progressiverollout", name, "-n", namespace, "-o", "json")
    if result.returncode != 0:
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def read_status(kubectl: KubectlRunner, namespace: str, name: str) -> dict[str, Any]:
    """The rollout's `.status` ({} when it has none yet or the object does not exist)."""
    obj = read_rollout(kubectl, namespace, name)
    status: dict[str, Any] = (obj or {}).get("status") or {}
    return status


def wait_for_phase(
    kubectl: KubectlRunner,
    namespace: str,
    name: str,
    phases: Collection[str],
    timeout: float,
    poll: float = 0.25,
) -> dict[str, Any]:
    """Poll until the rollout's status.phase is one of `phases`; return that status.

    Raises WaitTimeout showing the last status seen.
    """
    return wait_until(
        lambda: read_status(kubectl, namespace, name),
        f"{namespace}/{name} to reach phase {'/'.join(sorted(phases))}",
        timeout,
        until=lambda status: status.get("phase") in phases,
        interval=poll,
    )
