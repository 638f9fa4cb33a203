"""deploy/kustomize's RBAC on a real API server: granted as written, and enough to run on.

The operator itself runs here as the ServiceAccount (with a token from the TokenRequest
API), watching one namespace, and adopts the example application: that exercises every
write the operator makes before a canary starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rollout_support import wait_for

from tidegate_devenv.cluster import KubectlRunner, free_port, http_ok, wait_until
from tidegate_devenv.environment import EnvironmentInfo

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "canary"
ACCOUNT = "system:serviceaccount:tidegate-system:tidegate"


@pytest.fixture(scope="module")
def installed_rbac(kubectl: KubectlRunner) -> None:
    """Everything in deploy/kustomize but the operator's own Deployment."""
    rendered = kubectl.check("kustomize", str(REPO_ROOT / "deploy" / "kustomize"))
    objects = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Deployment"]
    kubectl.apply_text(yaml.safe_dump_all(objects))
    kubectl.check("wait", "--for=condition=Established", "crd/progressiverollouts.tidegate.io")


def can_i(kubectl: KubectlRunner, verb: str, resource: str, *where: str) -> bool:
    result = kubectl.run("auth", "can-i", verb, resource, f"--as={ACCOUNT}", *where)
    return result.stdout.strip() == "yes"


@pytest.mark.parametrize(
    ("verb", "resource"),
    [
        ("watch", "progressiverollouts.tidegate.io"),
        ("patch", "progressiverollouts.tidegate.io"),
        ("patch", "progressiverollouts.tidegate.io/status"),
        ("watch", "deployments.apps"),
        ("create", "deployments.apps"),
        ("patch", "deployments.apps"),
        ("create", "services"),
        ("patch", "httproutes.gateway.networking.k8s.io"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
    ],
)
@pytest.mark.usefixtures("installed_rbac")
def test_service_account_is_granted(kubectl: KubectlRunner, verb: str, resource: str) -> None:
    assert can_i(kubectl, verb, resource, "-n", "some-app-namespace")


@pytest.mark.usefixtures("installed_rbac")
def test_cluster_scoped_grants_for_kopf(kubectl: KubectlRunner) -> None:
    assert can_i(kubectl, "watch", "customresourcedefinitions.apiextensions.k8s.io")
    assert can_i(kubectl, "watch", "namespaces")


@pytest.mark.usefixtures("installed_rbac")
def test_service_account_cannot_delete_or_read_secrets(kubectl: KubectlRunner) -> None:
    assert not can_i(kubectl, "delete", "deployments.apps", "-n", "default")
    assert not can_i(kubectl, "get", "secrets", "-n", "default")


def service_account_kubeconfig(kubectl: KubectlRunner, path: Path) -> Path:
    """The admin kubeconfig's cluster, with the ServiceAccount's token as the user."""
    token = kubectl.check("create", "token", "tidegate", "-n", "tidegate-system").strip()
    admin = json.loads(kubectl.check("config", "view", "--raw", "--minify", "-o", "json"))
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "tidegate", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": "tidegate"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def operator_as_service_account(
    environment: EnvironmentInfo, kubectl: KubectlRunner, namespace: str, tmp_path: Path
) -> Iterator[Path]:
    kubeconfig = service_account_kubeconfig(kubectl, tmp_path / "sa.kubeconfig")
    health = f"127.0.0.1:{free_port()}"
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "tidegate", "run", "-n", namespace]
        argv += [f"--prometheus-url={environment.prometheus_url}", f"--health-listen={health}"]
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )
    try:
        wait_until(lambda: http_ok(f"http://{health}/readyz"), "operator", 60, log)
        yield log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.usefixtures("installed_rbac")
def test_operator_adopts_an_application_as_its_service_account(
    kubectl: KubectlRunner, namespace: str, operator_as_service_account: Path
) -> None:
    for manifest in ("app.yaml", "rollout.yaml"):
        kubectl.check("apply", "-n", namespace, "-f", str(EXAMPLE / manifest))

    def phase() -> object:
        out = kubectl.check("get", "-n", namespace, "pro/shop", "-o", "jsonpath={.status.phase}")
        return out == "Initialized"

    wait_for(phase, "phase Initialized", 60)
    stable = json.loads(kubectl.check("get", "-n", namespace, "deploy/shop-stable", "-o", "json"))
    assert stable["spec"]["replicas"] == 2
    wait_for(
        lambda: (
            kubectl.check("get", "-n", namespace, "deploy/shop", "-o", "jsonpath={.spec.replicas}")
            == "0"
        ),
        "the user's Deployment scaled to 0",
        30,
    )
    kubectl.check("get", "-n", namespace, "svc/shop-stable", "svc/shop-canary")
    refs = json.loads(
        kubectl.check(
            "get", "-n", namespace, "httproute/shop", "-o", "jsonpath={.spec.rules[0].backendRefs}"
        )
    )
    assert [(r["name"], r["weight"]) for r in refs] == [("shop-stable", 100), ("shop-canary", 0)]
    reasons = kubectl.check(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).split()
    assert "Initialized" in reasons
    log = operator_as_service_account.read_text()
    assert "forbidden" not in log.lower(), log[-3000:]
