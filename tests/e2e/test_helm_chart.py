"""The Helm chart, rendered by the real helm binary (no cluster): it lints, and what it renders
says what deploy/kustomize says, for the default values and a few others.

Not unit tests only because helm is a process; none of these needs the local control plane.
tests/e2e/test_helm_install.py installs the chart into one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.cli import build_parser
from tidegate_devenv.helm import CHART, HelmRunner
from tidegate_devenv.paths import REPO

KUSTOMIZE = REPO / "deploy" / "kustomize"
RELEASE, NAMESPACE = "rel", "tg-ns"

# name -> `helm template` value arguments.
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "two-namespaces-one-replica": (
        "--set", "watchNamespaces={team-a,team-b}",
        "--set", "replicaCount=1",
        "--set", "image.tag=9.9.9",
    ),
    "other-ports-no-prometheus-url": (
        "--set", "healthPort=8181",
        "--set", "metrics.port=9191",
        "--set", "prometheusUrl=",
    ),
    "service-monitor": (
        "--set", "metrics.serviceMonitor.enabled=true",
        "--set", "metrics.serviceMonitor.interval=15s",
        "--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack",
    ),
}  # fmt: skip


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kustomize_objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((KUSTOMIZE / name).read_text())
        if doc
    ]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(found)


def port_of(listen: str) -> int:
    return int(listen.rpartition(":")[2])


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, helm: HelmRunner) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, helm.template(RELEASE, NAMESPACE, *VALUE_SETS[name])


@pytest.fixture(scope="module")
def defaults(helm: HelmRunner) -> list[dict[str, Any]]:
    return helm.template(RELEASE, NAMESPACE)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_chart_lints_strictly(helm: HelmRunner, name: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *VALUE_SETS[name])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_lint_fails_on_a_broken_chart(helm: HelmRunner, tmp_path: Path) -> None:
    """The lint above can fail: a template that does not parse is reported."""
    broken = tmp_path / "tidegate"
    broken.mkdir()
    (broken / "Chart.yaml").write_text((CHART / "Chart.yaml").read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("kind: {{ .Values.missing.field }\n")
    result = helm.run("lint", "--strict", str(broken))
    assert result.returncode != 0


def test_deployment_args_are_the_clis_and_match_the_values(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendered
    spec = container(objects)
    args = build_parser().parse_args(spec["args"])  # an unknown flag exits here
    assert args.command == "run"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if name == "two-namespaces-one-replica":
        assert (args.namespace, args.all_namespaces) == (["team-a", "team-b"], False)
        assert one(objects, "Deployment")["spec"]["replicas"] == 1
        assert spec["image"] == f"{values['image']['repository']}:9.9.9"
    else:
        assert (args.namespace, args.all_namespaces) == ([], True)
        assert one(objects, "Deployment")["spec"]["replicas"] == 2
    if name == "other-ports-no-prometheus-url":
        assert args.prometheus_url is None
        assert (port_of(args.health_listen), port_of(args.metrics_listen)) == (8181, 9191)
    else:
        assert args.prometheus_url == values["prometheusUrl"]
        assert (port_of(args.health_listen), port_of(args.metrics_listen)) == (8080, 9090)
    assert spec["ports"] == [
        {"name": "health", "containerPort": port_of(args.health_listen)},
        {"name": "metrics", "containerPort": port_of(args.metrics_listen)},
    ]
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}


def test_metrics_service_selects_the_operator_pods_on_the_metrics_port(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    service = one(objects, "Service")
    deployment = one(objects, "Deployment")
    assert service["metadata"]["name"] == f"{RELEASE}-tidegate-metrics"
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"] == NAMESPACE
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    args = build_parser().parse_args(container(objects)["args"])
    assert service["spec"]["ports"] == [
        {
            "name": "metrics",
            "port": port_of(args.metrics_listen),
            "targetPort": "metrics",
            "protocol": "TCP",
        }
    ]


def test_service_monitor_only_when_enabled_and_it_selects_the_metrics_service(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = rendered
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    if name != "service-monitor":
        assert monitors == []
        return
    (monitor,) = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = one(objects, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    # Not the pods, nor any other Service of the release: the component label.
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s"}
    ]


@pytest.mark.parametrize("kind", ["ClusterRole", "Role"])
def test_rbac_has_the_same_rules_as_kustomize(defaults: list[dict[str, Any]], kind: str) -> None:
    # But for the Lease's name: kustomize's is fixed, the chart's the release's.
    rules = yaml.safe_dump(one(kustomize_objects(), kind)["rules"])
    rules = rules.replace("- tidegate-leader\n", f"- {RELEASE}-tidegate-leader\n")
    assert one(defaults, kind)["rules"] == yaml.safe_load(rules)


def test_bindings_grant_the_roles_to_the_charts_service_account_in_the_release_namespace(
    defaults: list[dict[str, Any]],
) -> None:
    account = one(defaults, "ServiceAccount")["metadata"]
    assert account["namespace"] == NAMESPACE
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
    for binding_kind, role_kind in [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")]:
        binding, role = one(defaults, binding_kind), one(defaults, role_kind)
        assert binding["subjects"] == [subject]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role["metadata"]["name"],
        }
    # The Lease is granted where the pods run, the namespace they elect their leader in.
    assert one(defaults, "Role")["metadata"]["namespace"] == NAMESPACE
    assert one(defaults, "RoleBinding")["metadata"]["namespace"] == NAMESPACE
    pod = one(defaults, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["name"]


WRITES = {"create", "update", "patch", "delete", "deletecollection", "*"}


def test_with_watch_namespaces_workloads_are_written_only_there(helm: HelmRunner) -> None:
    """No ClusterRoleBinding grants a write: the operator's rules are bound in each watched
    namespace, and cluster-wide it only lists and watches."""
    objects = helm.template(RELEASE, NAMESPACE, *VALUE_SETS["two-namespaces-one-replica"])
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    for binding in (o for o in objects if o["kind"] == "ClusterRoleBinding"):
        rules = roles[binding["roleRef"]["name"]]["rules"]
        verbs = {verb for rule in rules for verb in rule["verbs"]}
        assert not verbs & WRITES, (binding["metadata"]["name"], verbs)
        assert {"list", "watch"} >= verbs
    bound = {
        o["metadata"]["namespace"]: o["roleRef"]
        for o in objects
        if o["kind"] == "RoleBinding" and o["roleRef"]["kind"] == "ClusterRole"
    }
    operator_role = f"{RELEASE}-tidegate"
    assert bound == {
        ns: {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": operator_role}
        for ns in ("team-a", "team-b")
    }
    # The rules bound there are the whole of the operator's (as kustomize's ClusterRole).
    assert roles[operator_role]["rules"] == one(kustomize_objects(), "ClusterRole")["rules"]


def test_a_disruption_budget_keeps_all_but_one_replica(
    defaults: list[dict[str, Any]], helm: HelmRunner
) -> None:
    budget = one(defaults, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    pod_labels = one(defaults, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    single = helm.template(RELEASE, NAMESPACE, *VALUE_SETS["two-namespaces-one-replica"])
    assert not [o for o in single if o["kind"] == "PodDisruptionBudget"]


def test_deployment_is_the_kustomize_one_but_for_names_and_labels(
    defaults: list[dict[str, Any]],
) -> None:
    """Replicas, the rolling update, the downward API, probes and security: the same."""
    helm_deployment = one(defaults, "Deployment")
    kustomize_deployment = one(kustomize_objects(), "Deployment")
    assert helm_deployment["spec"]["replicas"] == kustomize_deployment["spec"]["replicas"]
    assert helm_deployment["spec"]["strategy"] == kustomize_deployment["spec"]["strategy"]
    helm_pod = helm_deployment["spec"]["template"]["spec"]
    kustomize_pod = kustomize_deployment["spec"]["template"]["spec"]
    for key in ("securityContext", "volumes"):
        assert helm_pod[key] == kustomize_pod[key], key
    helm_container, kustomize_container = container(defaults), container(kustomize_objects())
    for key in (
        "env", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext",
        "volumeMounts",
    ):  # fmt: skip
        assert helm_container[key] == kustomize_container[key], key
    helm_args = vars(build_parser().parse_args(helm_container["args"]))
    kustomize_args = vars(build_parser().parse_args(kustomize_container["args"]))
    del helm_args["handler"], kustomize_args["handler"]
    # The Lease: kustomize's fixed name, the chart's its release's.
    assert kustomize_args.pop("leader_election_id") == "tidegate-leader"
    assert helm_args.pop("leader_election_id") == f"{RELEASE}-tidegate-leader"
    assert helm_args == kustomize_args
    # Spread the same way, each over its own pods.
    for key in ("affinity", "topologySpreadConstraints"):
        assert without_selectors(helm_pod[key]) == without_selectors(kustomize_pod[key]), key


def without_selectors(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: without_selectors(v) for k, v in tree.items() if k != "labelSelector"}
    if isinstance(tree, list):
        return [without_selectors(v) for v in tree]
    return tree


def test_the_replicas_prefer_different_nodes_and_zones(
    defaults: list[dict[str, Any]], helm: HelmRunner
) -> None:
    pod = one(defaults, "Deployment")["spec"]["template"]["spec"]
    own = one(defaults, "Deployment")["spec"]["selector"]["matchLabels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": own},
    }
    assert pod["topologySpreadConstraints"] == [
        {
            "topologyKey": "topology.kubernetes.io/zone",
            "maxSkew": 1,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": own},
        }
    ]
    # A user's affinity replaces the default; the spread can be turned off.
    custom = helm.template(
        RELEASE, NAMESPACE,
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].key=pool",
        "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
        ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "--set", "topologySpread.enabled=false",
    )  # fmt: skip
    pod = one(custom, "Deployment")["spec"]["template"]["spec"]
    assert list(pod["affinity"]) == ["nodeAffinity"]
    assert "topologySpreadConstraints" not in pod


def test_two_releases_in_one_namespace_share_no_object_and_no_lease(helm: HelmRunner) -> None:
    first, second = (helm.template(name, NAMESPACE) for name in ("blue", "green"))

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objects}

    assert not names(first) & names(second)
    leases = [
        build_parser().parse_args(container(objects)["args"]).leader_election_id
        for objects in (first, second)
    ]
    assert leases == ["blue-tidegate-leader", "green-tidegate-leader"]
    for objects, release in zip((first, second), ("blue", "green"), strict=True):
        account = one(objects, "ServiceAccount")["metadata"]["name"]
        assert account == f"{release}-tidegate"
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account
        # Its Role reads and renews its own Lease only.
        (named,) = [r for r in one(objects, "Role")["rules"] if r.get("resourceNames")
                    and r["resources"] == ["leases"]]  # fmt: skip
        assert named["resourceNames"] == [f"{release}-tidegate-leader"]


def test_crds_ship_in_the_charts_crds_directory_not_as_a_template(
    defaults: list[dict[str, Any]],
) -> None:
    """So helm installs the CRDs before the templates and never deletes them."""
    assert [o for o in defaults if o["kind"] == "CustomResourceDefinition"] == []
    shipped = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    generated = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert set(shipped) == {
        "progressiverollout.yaml",
        "metrictemplate.yaml",
        "clustermetrictemplate.yaml",
    }
    assert shipped == generated
