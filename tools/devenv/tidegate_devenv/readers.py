"""Read-only credentials between regions, made the way docs/waves.md tells a user to:
deploy/waves applied in each region, and deploy/waves/mint-reader-kubeconfig.sh minting a
token of its ServiceAccount (TokenRequest, which the local API servers serve: they run with
service-account signing keys) into a Secret `<region>-reader` of every other region.

So the environment's readers are what a user's would be, and the deploy path is exercised
on every `tidegate-dev up --clusters N`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tidegate_devenv.cluster import KubectlRunner, StartupError
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.paths import WAVES_DEPLOY
from tidegate_devenv.regions import RegionsInfo

MINT_SCRIPT = WAVES_DEPLOY / "mint-reader-kubeconfig.sh"
READER_ACCOUNT = "tidegate-wave-reader"
SECRET_KEY = "kubeconfig"
# Where `tidegate-dev up --clusters N` and the e2e `regions` fixture write them.
DEFAULT_NAMESPACE = "default"
# A dev environment lives for hours at most; a long-lived one mints again (`up` again).
TOKEN_DURATION = "24h"


def reader_secret_name(region: str) -> str:
    """The Secret holding a reader kubeconfig for `region`, in the other regions."""
    return f"{region}-reader"


def install_reader_rbac(kubectl: KubectlRunner, namespace: str) -> None:
    """deploy/waves (ServiceAccount, Role, RoleBinding) in `namespace`, as the docs apply it."""
    rendered = kubectl.check("kustomize", str(WAVES_DEPLOY))
    kubectl.check("apply", "--namespace", namespace, "-f", "-", stdin=rendered)


def mint_reader_secret(
    read: EnvironmentInfo,
    into: EnvironmentInfo,
    namespace: str,
    *,
    duration: str = TOKEN_DURATION,
) -> None:
    """Run the mint script: a reader kubeconfig for region `read` (its rollouts in
    `namespace`) into the Secret `<read>-reader` in `namespace` of region `into`."""
    result = subprocess.run(
        [
            "bash",
            str(MINT_SCRIPT),
            "--kubeconfig",
            read.kubeconfig,
            "--namespace",
            namespace,
            "--cluster-name",
            read.cluster,
            "--duration",
            duration,
            "--secret",
            reader_secret_name(read.cluster),
            "--key",
            SECRET_KEY,
            "--into-kubeconfig",
            into.kubeconfig,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECTL": read.kubectl},
    )
    if result.returncode != 0:
        raise StartupError(
            f"minting {reader_secret_name(read.cluster)} into {into.cluster} failed: "
            f"{result.stderr.strip()}"
        )


def write_reader_secrets(
    regions: RegionsInfo, namespace: str = DEFAULT_NAMESPACE, *, duration: str = TOKEN_DURATION
) -> None:
    """In every region, in `namespace` (which must exist): the reader RBAC, and for each
    other region a Secret `<other>-reader` (key `kubeconfig`) with a reader kubeconfig for
    it, as `spec.waves.after[].kubeconfigSecretRef` names it."""
    for region in regions.regions:
        install_reader_rbac(KubectlRunner(Path(region.kubectl), Path(region.kubeconfig)), namespace)
    for read in regions.regions:
        for into in regions.regions:
            if into.cluster != read.cluster:
                mint_reader_secret(read, into, namespace, duration=duration)
