"""docs/install.md's install, upgrade and uninstall, run as written against the local cluster.

The `sh` blocks under "## Install", "## Upgrade" and "## Uninstall", for Helm and for
kustomize, run one command at a time with `bash`, with kubectl and helm of this environment
on PATH. On kwok's nodes the installed operator's pods become Ready without running the
image, so a local `tidegate run` stands in for them: started after the upgrade, stopped
just before the command that removes the operator. Between the two, the canary example's
rollout is created and initialised. Afterwards no rollout, CRD, namespace or cluster-wide
object of the install may be left.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rollout_support import route_host, scratch_namespace

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.helm import CHART, HelmRunner
from tidegate_devenv.operator_process import (
    OperatorProcess,
    install_crd,
    start_operator,
    wait_for_phase,
)
from tidegate_devenv.paths import CANARY_EXAMPLE, REPO

# The CRDs are deleted and made again by the install, and the uninstall acts on every
# namespace: a cluster of its own, where no other test has left anything (one did: a CRD of
# its own whose name says tidegate). The shared one is not touched.
pytestmark = [
    pytest.mark.own_environment(fresh=True),
    pytest.mark.skipif(
        bool(os.environ.get("TIDEGATE_TEST_KUBECONFIG")),
        reason="deletes tidegate's CRDs, and every rollout with them: local cluster only",
    ),
]

DOC = REPO / "docs" / "install.md"
NAMESPACE = "tidegate-system"
CRDS = ("progressiverollouts", "metrictemplates", "clustermetrictemplates")
# A command of these removes the operator: the stand-in stops just before it.
REMOVES_OPERATOR = re.compile(r"^(helm uninstall |kubectl delete -k deploy/kustomize )")
COMMAND_TIMEOUT = 180.0


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole line), up to the next heading of its level or
    higher."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE).search(text, start)
    return text[start : end.start() if end else len(text)]


def commands(part: str, method: str) -> list[str]:
    """The commands of the `sh` blocks under `## part` / `### With method`, continuation
    lines joined."""
    text = section(section(DOC.read_text(), f"## {part}"), f"### With {method}")
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                found.append(command.strip())
    assert found, f"no sh block under {part} / With {method}"
    return found


def test_the_blocks_are_found() -> None:
    # What the test below runs: the install, then the uninstall in the documented order.
    for method in ("Helm", "kustomize"):
        uninstall = commands("Uninstall", method)
        assert uninstall[0].startswith("kubectl delete progressiverollouts --all")
        assert any(REMOVES_OPERATOR.match(c) for c in uninstall[1:])
        assert commands("Install", method)
        assert "--force-conflicts" in commands("Upgrade", method)[0]


class Shell:
    """bash with this environment's kubectl and helm on PATH, from the checkout's root."""

    def __init__(self, environment: EnvironmentInfo, helm: HelmRunner) -> None:
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join(
                [str(Path(environment.kubectl).parent), str(helm.helm.parent), os.environ["PATH"]]
            ),
            "KUBECONFIG": environment.kubeconfig,
            "HELM_CACHE_HOME": str(helm.home / "cache"),
            "HELM_CONFIG_HOME": str(helm.home / "config"),
            "HELM_DATA_HOME": str(helm.home / "data"),
            # The install's settings: on kwok's nodes the image is never pulled.
            "IMAGE": "tidegate",
            "TAG": "dev",
            "PROMETHEUS_URL": environment.prometheus_url,
        }

    def run(self, command: str) -> None:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"


def cluster_wide(kubectl: KubectlRunner) -> set[str]:
    """Every cluster-scoped object whose name says tidegate, as kind/name."""
    out = kubectl.check(
        "get", "customresourcedefinitions,clusterroles,clusterrolebindings,namespaces",
        "-o", "name",
    )  # fmt: skip
    return {name for name in out.split() if "tidegate" in name}


@pytest.fixture
def clean_cluster(kubectl: KubectlRunner) -> Iterator[None]:
    """No tidegate CRD before the test (so the install must make them); the checkout's
    CRDs back after it, for the next case on this cluster."""
    for crd in CRDS:
        kubectl.check("delete", "crd", f"{crd}.tidegate.io", "--ignore-not-found", "--wait=true")
    try:
        yield
    finally:
        install_crd(kubectl)


@pytest.mark.parametrize("method", ["Helm", "kustomize"])
def test_install_and_uninstall_as_written_leave_nothing_behind(
    method: str,
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    helm_on_cluster: HelmRunner,
    clean_cluster: None,
    tmp_path: Path,
) -> None:
    shell = Shell(environment, helm_on_cluster)
    before = cluster_wide(kubectl)
    for command in commands("Install", method):
        shell.run(command)
    installed = cluster_wide(kubectl) - before
    assert {f"customresourcedefinition.apiextensions.k8s.io/{c}.tidegate.io" for c in CRDS} <= (
        installed
    )
    if method == "Helm":
        # Why the upgrade forces: Helm's field manager holds the CRDs it created.
        plain = kubectl.run("apply", "--server-side", "-f", str(CHART / "crds"))
        assert plain.returncode != 0
        assert 'conflict with "helm"' in plain.stderr
    for command in commands("Upgrade", method):
        shell.run(command)

    # The stand-in for the installed Deployment: every namespace, its Lease in the install's.
    operator: OperatorProcess | None = start_operator(
        environment, tmp_path / "operator.log", lease_namespace=NAMESPACE
    )
    try:
        with scratch_namespace(kubectl, "t-install") as namespace:
            app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
            for obj in app:
                if obj["kind"] == "HTTPRoute":
                    obj["spec"]["hostnames"] = [route_host(namespace, obj["metadata"]["name"])]
            kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))
            kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))
            wait_for_phase(kubectl, namespace, "shop", {"Initialized"}, timeout=60)
            rollout = kubectl.check("get", "progressiverollout", "shop", "-n", namespace,
                                    "-o", "jsonpath={.metadata.finalizers}")  # fmt: skip
            assert "tidegate.io/hand-back" in rollout

            for command in commands("Uninstall", method):
                if REMOVES_OPERATOR.match(command) and operator is not None:
                    operator.stop()
                    operator = None
                shell.run(command)

            # Handed back: the user's Deployment, as it was, and nothing of tidegate's.
            copies = kubectl.check(
                "get", "deployments,services,horizontalpodautoscalers,configmaps",
                "--all-namespaces", "--selector", "tidegate.io/rollout", "-o", "name",
            )  # fmt: skip
            assert not copies.split()
            names = kubectl.check("get", "deployments", "-n", namespace, "-o", "name").split()
            assert names == ["deployment.apps/shop"]
            replicas = kubectl.check("get", "deployment", "shop", "-n", namespace,
                                     "-o", "jsonpath={.spec.replicas}")  # fmt: skip
            assert replicas == "2"
    except BaseException:
        # Whatever a failed run left: the release, then the namespace.
        helm_on_cluster.run("uninstall", "tidegate", "--namespace", NAMESPACE, "--wait")
        kubectl.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
        raise
    finally:
        if operator is not None:
            operator.stop()

    # Nothing of the install is left: CRDs (and so no rollout), RBAC, the namespace.
    assert not cluster_wide(kubectl) & installed
    assert kubectl.run("get", "namespace", NAMESPACE).returncode != 0
    left = {f"customresourcedefinition.apiextensions.k8s.io/{c}.tidegate.io" for c in CRDS}
    assert not cluster_wide(kubectl) & left
    releases = helm_on_cluster.check("list", "--all-namespaces", "-q")
    assert "tidegate" not in releases.split()
