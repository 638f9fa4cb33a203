"""The operator as a subprocess of a local environment, and small helpers around rollouts.

For the demo, the benchmark and end-to-end tests:

    info = start_environment(state_dir)
    proc = start_operator(info, state_dir)        # returns once /readyz answers 200
    try:
        kubectl = kubectl_for(info)
        status = wait_for_phase(kubectl, "demo", "shop", {"Initialized"}, timeout=60)
    finally:
        stop_operator(proc)
        stop_environment(state_dir)

`start_operator` logs to `<state_dir>/logs/operator.log` and raises `StartupError` (with the
log's tail) when the operator does not become ready. `stop_operator` stops the operator's
whole process group and is safe to call twice. `read_status` and `wait_for_phase` go through
kubectl, so they can be called from plain (non-async) code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from tidegate_devenv.cluster import KubectlRunner, StartupError, free_port, http_ok, wait_until
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.paths import CRD_FILE

READY_TIMEOUT = 60.0


def install_crd(kubectl: KubectlRunner) -> None:
    """Apply the ProgressiveRollout CRD from this checkout and wait until it is served."""
    kubectl.check("apply", "--server-side", "-f", str(CRD_FILE))
    kubectl.check("wait", "--for=condition=Established", "crd/progressiverollouts.tidegate.io")


def kubectl_for(info: EnvironmentInfo) -> KubectlRunner:
    return KubectlRunner(Path(info.kubectl), Path(info.kubeconfig))


def operator_log(state_dir: Path) -> Path:
    return state_dir / "logs" / "operator.log"


def start_operator(
    info: EnvironmentInfo,
    state_dir: Path,
    prometheus_url: str | None = None,
    *,
    namespaces: Sequence[str] = (),
    log: Path | None = None,
    timeout: float = READY_TIMEOUT,
) -> subprocess.Popen[bytes]:
    """Start `python -m tidegate run` against the environment's cluster and wait for /readyz.

    `prometheus_url` defaults to the environment's Prometheus; without `namespaces` it
    watches all of them. The process runs in a session of its own; stop it with
    `stop_operator` (or kill it: a test may).
    """
    log = log or operator_log(state_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    health = f"127.0.0.1:{free_port()}"
    argv = [
        sys.executable,
        "-m",
        "tidegate",
        "run",
        "--prometheus-url",
        prometheus_url or info.prometheus_url,
        "--health-listen",
        health,
        *(f"--namespace={namespace}" for namespace in namespaces),
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "KUBECONFIG": info.kubeconfig},
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise StartupError(f"the operator exited with code {proc.returncode}; see {log}")
        return http_ok(f"http://{health}/readyz")

    try:
        wait_until(ready, "the operator", timeout, log)
    except BaseException:
        stop_operator(proc)
        raise
    return proc


def stop_operator(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the operator's process group, then SIGKILL what is left after `timeout`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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

    Raises TimeoutError naming the last phase and message seen.
    """
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = read_status(kubectl, namespace, name)
        if status.get("phase") in phases:
            return status
        time.sleep(poll)
    raise TimeoutError(
        f"{namespace}/{name} did not reach {'/'.join(sorted(phases))} within {timeout:.0f}s "
        f"(phase {status.get('phase')!r}: {status.get('message', '')})"
    )
