"""A region's kubeconfig is a tenant's input: one that would run a command (exec) or send the
operator's own ServiceAccount token to a server of the tenant's choosing (tokenFile) is
refused by key, runs nothing and sends nothing, and the rollout says why."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import yaml
from rollout_support import events, route_host

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.regional import regional_app, release_patch
from tidegate_devenv.waiting import wait_until


class Listener:
    """A TCP port of the test's own that counts who connects to it (a TLS server would see
    no more: nothing may be sent there at all)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


def kubeconfig(server: str, user: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    })  # fmt: skip


def secret(name: str, config: str) -> str:
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
         "stringData": {"kubeconfig": config}}
    )  # fmt: skip


def region(cluster: str) -> dict[str, Any]:
    return {"cluster": cluster, "kubeconfigSecretRef": {"name": cluster}, "rollout": "shop"}


def test_exec_and_token_file_kubeconfigs_run_nothing_send_nothing_and_are_reported(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "exec-ran"
    listener = Listener()
    server = f"https://127.0.0.1:{listener.port}"
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "touch",
            "args": [str(marker)],
            "interactiveMode": "Never",
        }
    }
    # A token file of the operator's (in a pod, its ServiceAccount's): were it read, the
    # client would connect to the listener to send it.
    token_file = tmp_path / "operator-token"
    token_file.write_text("operator-token")
    by_exec = secret("by-exec", kubeconfig(server, exec_user))
    by_file = secret("by-file", kubeconfig(server, {"tokenFile": str(token_file)}))
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=by_exec + "---\n" + by_file)
    kubectl.check("apply", "-n", namespace, "-f", "-",
                  stdin=regional_app(host=route_host(namespace, "shop")))  # fmt: skip
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["waves"] = {"after": [region("by-exec"), region("by-file")]}
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(rollout))
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        wait_until(
            lambda: read_status(kubectl, namespace, "shop").get("phase"), "shop initialised", 60,
            until=lambda phase: phase == "Initialized",
        )  # fmt: skip
        kubectl.check("patch", "-n", namespace, "deployment/shop", "-p", release_patch("1.1.0"))

        def refused_regions() -> dict[str, dict[str, Any]]:
            status = read_status(kubectl, namespace, "shop")
            regions = {r["cluster"]: r for r in (status.get("waves") or {}).get("regions", [])}
            refused = {
                name: r for name, r in regions.items()
                if r.get("reason") == "Unreachable" and "does not accept" in r.get("message", "")
            }  # fmt: skip
            return refused

        refused: dict[str, dict[str, Any]] = wait_until(
            refused_regions, "both refused", 90, until=lambda found: len(found) == 2
        )
        assert "exec (runs a command)" in refused["by-exec"]["message"]
        assert "tokenFile (reads a file of the operator's)" in refused["by-file"]["message"]
        status = read_status(kubectl, namespace, "shop")
        assert status["phase"] == "WaitingForWave"
        wave = [c for c in status["conditions"] if c["type"] == "Wave"]
        assert wave and wave[0]["reason"] == "Unreachable"
        # The kubeconfig was handed to the regions adapter (the refusal above is its answer):
        # had it reached the client, the command would have run and the token been sent.
        assert not marker.exists()
        assert listener.connections == 0
        told = str(status) + str(events(kubectl, namespace))
        assert str(token_file) not in told and str(marker) not in told
    finally:
        operator.stop()
        listener.close()
