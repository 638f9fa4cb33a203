"""The install manifests under deploy/ agree with what the operator does.

Whether the RBAC grants what the operator needs, and nothing more, is not read from the code
here: tests/e2e/test_deploy_rbac.py runs the operator as its ServiceAccount and compares the
API server's audit log with deploy/kustomize/rbac.yaml. Here: the kustomize manifests'
structure, read as files. The Helm chart is rendered by the real helm binary, a process, so
its tests (that it says the same as these manifests) are in tests/e2e/test_helm.py.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.adapters.notifications import DEFAULT_SECRET
from tidegate.cli import build_parser
from tidegate.leadership import DEFAULT_LEASE_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
KUSTOMIZE_CRDS = KUSTOMIZE / "crds"  # applied and deleted apart from the operator
SERVICE_MONITOR = KUSTOMIZE / "servicemonitor"
CHART = DEPLOY / "helm" / "tidegate"
CRDS = REPO_ROOT / "crds"
# Each CRD of crds/ and its copies: kustomize loads nothing from outside its directory, and
# Helm installs what its chart's crds/ holds.
CRD_COPIES = [
    (CRDS / "progressiverollout.yaml", KUSTOMIZE_CRDS / "crd.yaml"),
    (CRDS / "metrictemplate.yaml", KUSTOMIZE_CRDS / "crd-metrictemplate.yaml"),
    (CRDS / "clustermetrictemplate.yaml", KUSTOMIZE_CRDS / "crd-clustermetrictemplate.yaml"),
] + [(crd, CHART / "crds" / crd.name) for crd in sorted(CRDS.glob("*.yaml"))]


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kustomize_objects(directory: Path = KUSTOMIZE) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return [obj for name in kustomization["resources"] for obj in load_all(directory / name)]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container() -> dict[str, Any]:
    deployment = one(kustomize_objects(), "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def project_version() -> str:
    version: str = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


# --- parsing ---------------------------------------------------------------------------------


def test_every_manifest_parses() -> None:
    templates = CHART / "templates"
    paths = [p for p in DEPLOY.rglob("*.yaml") if not p.is_relative_to(templates)]
    assert len(paths) >= 8
    for path in paths:
        for doc in load_all(path):
            assert isinstance(doc, dict), path
            if path.name not in ("kustomization.yaml", "Chart.yaml", "values.yaml"):
                assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path


@pytest.mark.parametrize(
    "directory",
    [KUSTOMIZE, KUSTOMIZE_CRDS, SERVICE_MONITOR],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_kustomization_lists_every_manifest_in_its_directory(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)


def test_crds_are_apart_from_the_operator() -> None:
    # `kubectl delete -k deploy/kustomize` must leave the CRDs, and with them the rollouts,
    # whose hand-back needs the operator (docs/install.md); deploy/kustomize/crds holds them.
    assert not [o for o in kustomize_objects() if o["kind"] == "CustomResourceDefinition"]
    crds = kustomize_objects(KUSTOMIZE_CRDS)
    assert {o["kind"] for o in crds} == {"CustomResourceDefinition"}
    assert len(crds) == len(list(CRDS.glob("*.yaml")))


def test_chart_and_values_parse_and_match_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "tidegate"
    assert str(chart["appVersion"]) == project_version()
    assert values["image"]["repository"]
    assert container()["image"].endswith(f":{project_version()}")


@pytest.mark.parametrize(("crd", "copy"), CRD_COPIES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_crd_copies_are_identical_to_the_generated_crd(crd: Path, copy: Path) -> None:
    assert copy.read_text() == crd.read_text(), (
        f"{copy.relative_to(REPO_ROOT)} is stale; refresh it with `make crds`"
    )


def test_every_crd_is_copied_into_both_installs() -> None:
    generated = {p.name for p in CRDS.glob("*.yaml")}
    assert len(generated) == 3
    assert {p.name for p in (CHART / "crds").glob("*.yaml")} == generated
    copied = {crd.name for crd, copy in CRD_COPIES if copy.parent == KUSTOMIZE_CRDS}
    assert copied == generated


# --- RBAC ------------------------------------------------------------------------------------


ROLES = ("ClusterRole", "Role")


# The exceptions: the canary's HPA copy is deleted when a rollout ends, and a Deployment copy
# once its revision lost its role (by uid, and only when it carries this rollout's label).
DELETABLE = {("autoscaling", "horizontalpodautoscalers"), ("apps", "deployments")}


def test_rbac_deletes_only_copies_and_names_no_wildcards() -> None:
    for kind in ROLES:
        for rule in one(kustomize_objects(), kind)["rules"]:
            assert "deletecollection" not in rule["verbs"]
            if "delete" in rule["verbs"]:
                granted = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
                assert granted <= DELETABLE, rule
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key]


def test_leases_and_the_notifications_secret_are_granted_in_the_operators_namespace_only() -> None:
    objects = kustomize_objects()
    cluster_wide = [
        r
        for r in one(objects, "ClusterRole")["rules"]
        if {"leases", "secrets"} & set(r["resources"])
    ]
    assert cluster_wide == []
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [DEFAULT_LEASE_NAME],  # its own, the operator's default
            "verbs": ["get", "update"],
        },
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [DEFAULT_SECRET],
            "verbs": ["get"],
        },
    ]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    ]


def test_binding_grants_the_role_to_the_deployment_service_account() -> None:
    objects = kustomize_objects()
    role, binding = one(objects, "ClusterRole"), one(objects, "ClusterRoleBinding")
    account, deployment = one(objects, "ServiceAccount"), one(objects, "Deployment")
    namespace = one(objects, "Namespace")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": namespace}
    ]
    assert account["metadata"]["namespace"] == deployment["metadata"]["namespace"] == namespace
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# --- the operator's Deployment and image -----------------------------------------------------


def test_deployment_args_are_accepted_by_the_cli() -> None:
    args = build_parser().parse_args(container()["args"])
    assert args.command == "run"
    assert args.all_namespaces
    assert args.prometheus_url
    health = int(args.health_listen.rpartition(":")[2])
    metrics = int(args.metrics_listen.rpartition(":")[2])
    assert health != metrics
    assert container()["ports"] == [
        {"name": "health", "containerPort": health},
        {"name": "metrics", "containerPort": metrics},
    ]


def test_metrics_service_selects_the_operator_pods_on_the_metrics_port() -> None:
    objects = kustomize_objects()
    deployment = one(objects, "Deployment")
    service = one(objects, "Service")
    assert service["metadata"]["name"] == "tidegate-metrics"
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    args = build_parser().parse_args(container()["args"])
    assert service["spec"]["ports"] == [
        {
            "name": "metrics",
            "port": int(args.metrics_listen.rpartition(":")[2]),
            "targetPort": "metrics",
            "protocol": "TCP",
        }
    ]


def test_the_service_monitor_is_apart_from_the_base_and_selects_the_metrics_service() -> None:
    assert not [o for o in kustomize_objects() if o["apiVersion"].startswith("monitoring.")]
    monitor = one(kustomize_objects(SERVICE_MONITOR), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(kustomize_objects(), "Service")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    # Only the metrics Service: the component label sets it apart from any other of the app.
    assert selector["app.kubernetes.io/component"] == "metrics"
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [
        ("metrics", "/metrics")
    ]


def test_probes_use_the_health_endpoints() -> None:
    spec = container()
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_two_replicas_elect_the_one_that_acts() -> None:
    deployment = one(kustomize_objects(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    # An upgrade never has fewer than two watching: a new pod is ready before an old one goes.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    args = build_parser().parse_args(container()["args"])
    assert args.leader_election  # on, by default
    assert "tidegate" in args.leader_election_id
    assert args.leader_election_namespace is None  # the pod's own
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in container()["env"]
        if "fieldRef" in e["valueFrom"]
    }
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    # The Lease's namespace (the pod's) is where the Role grants it.
    assert (
        one(kustomize_objects(), "Role")["metadata"]["namespace"]
        == (deployment["metadata"]["namespace"])
    )


def test_the_operator_and_the_loadtester_share_a_token() -> None:
    """The loadtester takes jobs only with the token, and its pod does not start without the
    Secret; the operator sends it when the Secret exists (it runs without a loadtester)."""
    from tidegate.adapters.loadtester import TOKEN_ENV as SENT
    from tidegate.loadtester import TOKEN_ENV as REQUIRED

    loadtester_dir = DEPLOY / "loadtester"
    loadtester = yaml.safe_load((loadtester_dir / "deployment.yaml").read_text())
    for found, name, optional in (
        (container(), SENT, {"optional": True}),
        (loadtester["spec"]["template"]["spec"]["containers"][0], REQUIRED, {}),
    ):
        (token,) = [e for e in found["env"] if e["name"] == name]
        assert token["valueFrom"]["secretKeyRef"] == {
            "name": "tidegate-loadtester-token", "key": "token", **optional,
        }  # fmt: skip
    policy = yaml.safe_load((loadtester_dir / "networkpolicy.yaml").read_text())
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "tidegate"}}}
    ]


def test_runs_as_non_root_on_a_read_only_root() -> None:
    pod = one(kustomize_objects(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+)", dockerfile, re.MULTILINE)
    assert user is not None, "the image must name a numeric user for runAsNonRoot"
    assert int(user.group(1)) == pod["securityContext"]["runAsUser"]


def test_the_image_default_command_is_accepted_by_the_cli() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.MULTILINE)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert entrypoint and cmd
    assert json.loads(entrypoint.group(1)) == ["tidegate"]
    args = build_parser().parse_args(json.loads(cmd.group(1)))
    assert args.command == "run"
