"""A real local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tidegate_devenv import audit, pki
from tidegate_devenv.binaries import Binaries
from tidegate_devenv.processes import ProcessTable
from tidegate_devenv.waiting import wait_until

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
DEFAULT_CONTEXT = "tidegate-dev"
APISERVER = "kube-apiserver"  # its name in the ProcessTable (and its log's)


class StartupError(RuntimeError):
    pass


# Ports for the components that take a port number instead of binding port 0 themselves.
# A port the kernel picks for port 0 comes from its ephemeral range, where any outgoing
# connection's source port or another bind to port 0 can take it before the component binds
# it (kube-scheduler once failed with "address already in use" so). These come from below
# that range, where nothing takes a port unasked, and none is handed out twice by a process.
# Processes that draw side by side (the e2e tests' workers) are each given a slice of that
# range in $TIDEGATE_PORT_SLICE, "K/N" (the K-th of N, from 0), so no two draw the same port.
_PORTS_FROM = 20000
PORT_SLICE_ENV = "TIDEGATE_PORT_SLICE"
_handed_out: set[int] = set()
_draw = random.Random()


def _port_range() -> tuple[int, int]:
    """[start, end) of the ports this process may hand out."""
    end = _ephemeral_start()
    start = min(_PORTS_FROM, end - 1000)
    raw = os.environ.get(PORT_SLICE_ENV, "").strip()
    if not raw:
        return start, end
    try:
        k, n = (int(part) for part in raw.split("/"))
    except ValueError:
        raise StartupError(f"{PORT_SLICE_ENV}={raw!r} is not K/N") from None
    if not 0 <= k < n:
        raise StartupError(f"{PORT_SLICE_ENV}={raw!r}: K must be in 0..N-1")
    width = (end - start) // n
    return start + k * width, start + (k + 1) * width


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range."""
    start, end = _port_range()
    for _ in range(1000):
        port = _draw.randrange(start, end)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken, or lingering from an earlier run
        _handed_out.add(port)
        return port
    raise StartupError(f"no free port in {start}-{end - 1} after 1000 tries")


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=context) as response:
        return bool(response.status == 200)


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    client: pki.KeyPair,
    user: str,
    *,
    context: str = DEFAULT_CONTEXT,
) -> Path:
    """A kubeconfig whose cluster and context are named `context`. Outside the default
    context, the user is named `<user>@<context>` too, so that the kubeconfigs of several
    control planes merge (KUBECONFIG=a:b:c) without one's user hiding another's."""
    user_entry = user if context == DEFAULT_CONTEXT else f"{user}@{context}"
    cluster = {"server": server, "certificate-authority": str(ca)}
    credentials = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": user_entry, "user": credentials}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user_entry}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class KubectlRunner:
    def __init__(self, kubectl: Path, kubeconfig: Path) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running kubectl (a `--watch`), its output as text lines on `stdout`."""
        return subprocess.Popen(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def check(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        if result.returncode != 0:
            raise StartupError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_established(self, *crds: str, timeout: float = 60) -> None:
        """Until each CRD (by name, or every one without names) is Established. Not `kubectl
        wait --for=condition=...`: on a CRD whose status the API server has not written yet
        it fails at once (".status.conditions accessor error"), which a loaded machine hits."""
        names = list(crds) or self.check("get", "crd", "-o", "name").split()
        names = [
            name.removeprefix("customresourcedefinition.apiextensions.k8s.io/") for name in names
        ]
        established = '{.status.conditions[?(@.type=="Established")].status}'

        def ready() -> bool:
            return all(
                self.run("get", f"crd/{name}", "-o", f"jsonpath={established}").stdout == "True"
                for name in names
            )

        wait_until(ready, f"CRDs {', '.join(names)} established", timeout)

    def apply_text(self, manifest: str) -> str:
        return self.check("apply", "--server-side", "-f", "-", stdin=manifest)


@dataclass(frozen=True)
class ControlPlane:
    server: str
    kubeconfig: Path


def _identities(
    ca: pki.CertificateAuthority, state_dir: Path, server: str, context: str
) -> dict[str, Path]:
    """A kubeconfig for each identity: the admin, and the components as a real cluster has them."""
    kubeconfigs = {}
    for short, user, group in [
        ("admin", "admin", "system:masters"),
        ("controller-manager", "system:kube-controller-manager", None),
        ("scheduler", "system:kube-scheduler", None),
    ]:
        client = ca.issue(short, user, organization=group)
        kubeconfigs[short] = write_kubeconfig(
            state_dir / f"{short}.kubeconfig", server, ca.cert_path, client, user, context=context
        )
    return kubeconfigs


def start_control_plane(
    binaries: Binaries,
    state_dir: Path,
    processes: ProcessTable,
    *,
    nodes: int = 3,
    context: str = DEFAULT_CONTEXT,
) -> ControlPlane:
    """Everything in `state_dir`, its own PKI included: control planes started in several
    directories share nothing but the binaries. Its kubeconfigs name their context
    `context`."""
    pki_dir = state_dir / "pki"
    ca = pki.CertificateAuthority(pki_dir)
    apiserver_port = free_port()
    server = f"https://127.0.0.1:{apiserver_port}"
    serving = ca.issue(
        "apiserver",
        "kube-apiserver",
        server_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        server_ips=("127.0.0.1", "10.96.0.1"),
    )
    service_accounts = pki.service_account_keys(pki_dir)
    kubeconfigs = _identities(ca, state_dir, server, context)

    etcd_client, etcd_peer = free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_client}"
    processes.start(
        "etcd",
        [
            str(binaries.etcd),
            "--name=dev",
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=dev=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throwaway store; durability would cost seconds here
            "--log-level=warn",
        ],
    )
    wait_until(lambda: http_ok(f"{etcd_url}/health"), "etcd", 30, processes.log_dir / "etcd.log")

    processes.start(
        APISERVER,
        [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver_port}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert_path}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={service_accounts.cert}",
            f"--service-account-signing-key-file={service_accounts.key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *audit.apiserver_flags(state_dir),
        ],
    )
    wait_for_apiserver(server, state_dir, processes)

    for component, binary, extra in [
        (
            "controller-manager",
            binaries.kube_controller_manager,
            [
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={service_accounts.key}",
                f"--root-ca-file={ca.cert_path}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle",
                # Each controller's client may ask more than the default 20/s, so that
                # thousands of Deployments changing at once are not held up here.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        ),
        ("scheduler", binaries.kube_scheduler, ["--kube-api-qps=200"]),
    ]:
        kubeconfig = kubeconfigs[component]
        processes.start(
            f"kube-{component}",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
                *extra,
            ],
        )
    admin = kubeconfigs["admin"]
    processes.start(
        "kwok",
        [
            str(binaries.kwok),
            f"--kubeconfig={admin}",
            f"--config={binaries.kwok_stages}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
            "--node-lease-duration-seconds=40",
        ],
    )
    kubectl = KubectlRunner(binaries.kubectl, admin)
    kubectl.apply_text(yaml.safe_dump_all(_fake_node(f"kwok-node-{i}") for i in range(nodes)))
    wait_until(
        lambda: (
            kubectl.run("wait", "--for=condition=Ready", "node", "--all", "--timeout=1s").returncode
            == 0
        ),
        "kwok nodes",
        60,
        processes.log_dir / "kwok.log",
    )
    return ControlPlane(server, admin)


def wait_for_apiserver(
    server: str, state_dir: Path, processes: ProcessTable, timeout: float = 60
) -> None:
    """Until the API server of the control plane in `state_dir` answers /readyz, as its
    admin (any other caller may not read /readyz)."""
    pki_dir = state_dir / "pki"
    tls = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    tls.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    wait_until(
        lambda: http_ok(f"{server}/readyz", tls),
        APISERVER,
        timeout,
        processes.log_dir / f"{APISERVER}.log",
    )


def _fake_node(name: str) -> dict[str, object]:
    # No taints, so a plain Deployment as a user writes it is scheduled here.
    # Room for thousands of pods (the scale benchmark's), as kwok's pods cost nothing.
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "1000"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": capacity, "capacity": capacity},
    }
