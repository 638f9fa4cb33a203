"""The Helm chart, rendered by the real helm binary (no cluster): it lints, what it renders
says what deploy/kustomize says, for the default values and a few others, and every value
docs/operations.md documents changes what it says it changes.

Not unit tests only because helm is a process; none of these needs the local control plane.
tests/e2e/test_helm_install.py installs the chart into one.
"""

from __future__ import annotations

import re
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.cli import build_parser
from tidegate_devenv.helm import CHART, HelmRunner
from tidegate_devenv.paths import REPO

KUSTOMIZE = REPO / "deploy" / "kustomize"
RELEASE, NAMESPACE = "rel", "tg-ns"
# `helm template` checks the chart's kubeVersion against this (its own default is 1.20): the
# version the e2e suite runs.
KUBE_VERSION = ("--kube-version", "1.35.4")

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


def render(helm: HelmRunner, *value_args: str) -> list[dict[str, Any]]:
    return helm.template(RELEASE, NAMESPACE, *KUBE_VERSION, *value_args)


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
    return name, render(helm, *VALUE_SETS[name])


@pytest.fixture(scope="module")
def defaults(helm: HelmRunner) -> list[dict[str, Any]]:
    return render(helm)


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
    objects = render(helm, *VALUE_SETS["two-namespaces-one-replica"])
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
    single = render(helm, *VALUE_SETS["two-namespaces-one-replica"])
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
    custom = render(
        helm,
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
    first, second = (helm.template(name, NAMESPACE, *KUBE_VERSION) for name in ("blue", "green"))

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


# --- Every documented value ------------------------------------------------------------------

DOCS = REPO / "docs" / "operations.md"
Objects = list[dict[str, Any]]


def documented_values() -> dict[str, tuple[str, str]]:
    """docs/operations.md's "Chart values" table: value -> (default cell, what-it-does cell)."""
    text = DOCS.read_text()
    section = text[text.index("### Chart values\n") :].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table: dict[str, tuple[str, str]] = {}
    for row in rows:
        value, default, what = (cell.strip() for cell in row.strip("|").split(" | "))
        table[value.strip("`")] = (default, what)
    return table


def first_code(cell: str) -> str:
    found = re.match(r"`([^`]*)`", cell)
    assert found, f"the default {cell!r} does not start with the literal value"
    return found.group(1)


def nested(path: str, value: Any) -> dict[str, Any]:
    """`a.b` = v as the values file {a: {b: v}}."""
    tree: Any = value
    for key in reversed(path.split(".")):
        tree = {key: tree}
    return dict(tree)


def lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        assert isinstance(node, dict) and key in node, f"{path} is not in values.yaml"
        node = node[key]
    return node


def leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found += leaves(value, f"{path}.")
        else:
            found.append(path)
    return found


def run_args(objects: Objects) -> Namespace:
    """The Deployment's arguments as `tidegate run` parses them: an unknown flag fails."""
    args = container(objects)["args"]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"tidegate refuses the rendered arguments {args}")
    assert parsed.command == "run"
    return parsed


def pod(objects: Objects) -> dict[str, Any]:
    return dict(one(objects, "Deployment")["spec"]["template"]["spec"])


def env(objects: Objects) -> dict[str, Any]:
    return {e["name"]: e for e in container(objects)["env"]}


def monitor(objects: Objects) -> dict[str, Any] | None:
    found = [o for o in objects if o["kind"] == "ServiceMonitor"]
    return found[0] if found else None


def spread(objects: Objects) -> dict[str, Any] | None:
    constraints = pod(objects).get("topologySpreadConstraints")
    return constraints[0] if constraints else None


@dataclass(frozen=True)
class Case:
    """A value set to something else than its default, what to look at in the rendered
    objects, and what it must then be (it is something else with the defaults)."""

    value: Any
    observe: Callable[[Objects], Any]
    expected: Any
    flag: str | None = None  # the `tidegate run` flag the value renders, named in the docs
    also: dict[str, Any] = field(default_factory=dict)  # other values it needs


EXTRA_ENV = [
    {"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"},
    {"name": "TEAM", "valueFrom": {"configMapKeyRef": {"name": "team", "key": "name"}}},
]
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "Exists"}]}]
        }
    }
}
KPS_PROMETHEUS = "http://prometheus-kube-prometheus-prometheus.monitoring:9090"

CASES: dict[str, Case] = {
    "image.repository": Case(
        "registry.example:5000/tidegate",
        lambda o: container(o)["image"].rpartition(":")[0], "registry.example:5000/tidegate",
    ),
    "image.tag": Case("9.9.9", lambda o: container(o)["image"].rpartition(":")[2], "9.9.9"),
    "image.pullPolicy": Case("Always", lambda o: container(o)["imagePullPolicy"], "Always"),
    "replicaCount": Case(3, lambda o: one(o, "Deployment")["spec"]["replicas"], 3),
    "watchNamespaces": Case(
        ["team-a", "team-b"],
        lambda o: (run_args(o).namespace, run_args(o).all_namespaces),
        (["team-a", "team-b"], False),
        flag="--namespace",
    ),
    "podDisruptionBudget.enabled": Case(
        False, lambda o: [x for x in o if x["kind"] == "PodDisruptionBudget"], []
    ),
    "prometheusUrl": Case(
        KPS_PROMETHEUS, lambda o: run_args(o).prometheus_url, KPS_PROMETHEUS,
        flag="--prometheus-url",
    ),
    "loadtesterUrl": Case(
        "http://tidegate-loadtester.tidegate-system:8080",
        lambda o: run_args(o).loadtester_url,
        "http://tidegate-loadtester.tidegate-system:8080",
        flag="--loadtester-url",
    ),
    "loadtesterTokenSecret": Case(
        "lt-token",
        lambda o: env(o)["TIDEGATE_LOADTESTER_TOKEN"]["valueFrom"]["secretKeyRef"],
        {"name": "lt-token", "key": "token", "optional": True},
    ),
    "notifications.secretName": Case(
        "providers", lambda o: run_args(o).notifications_secret, f"{NAMESPACE}/providers",
        flag="--notifications-secret",
    ),
    "notifications.secretNamespace": Case(
        "alerting", lambda o: run_args(o).notifications_secret,
        "alerting/tidegate-notifications", flag="--notifications-secret",
    ),
    "healthPort": Case(
        8181, lambda o: port_of(run_args(o).health_listen), 8181, flag="--health-listen"
    ),
    "metrics.port": Case(
        9191, lambda o: port_of(run_args(o).metrics_listen), 9191, flag="--metrics-listen"
    ),
    "metrics.serviceMonitor.enabled": Case(True, lambda o: monitor(o) is not None, True),
    "metrics.serviceMonitor.interval": Case(
        "15s",
        lambda o: (m := monitor(o)) and m["spec"]["endpoints"][0]["interval"],
        "15s",
        also={"metrics": {"serviceMonitor": {"enabled": True}}},
    ),
    "metrics.serviceMonitor.labels": Case(
        {"release": "prometheus"},
        lambda o: (m := monitor(o)) and m["metadata"]["labels"].get("release"),
        "prometheus",
        also={"metrics": {"serviceMonitor": {"enabled": True}}},
    ),
    "serviceAccount.name": Case(
        "ops-tidegate",
        lambda o: (pod(o)["serviceAccountName"], one(o, "ServiceAccount")["metadata"]["name"]),
        ("ops-tidegate", "ops-tidegate"),
    ),
    "leaderElection.enabled": Case(
        False, lambda o: run_args(o).leader_election, False, flag="--no-leader-election",
        also={"replicaCount": 1},
    ),
    "leaderElection.leaseName": Case(
        "team-tidegate-lease", lambda o: run_args(o).leader_election_id, "team-tidegate-lease",
        flag="--leader-election-id",
    ),
    "leaderElection.leaseNamespace": Case(
        "coordination", lambda o: run_args(o).leader_election_namespace, "coordination",
        flag="--leader-election-namespace",
    ),
    "leaderElection.leaseDuration": Case(
        30, lambda o: run_args(o).leader_election_lease_duration, 30,
        flag="--leader-election-lease-duration",
    ),
    "leaderElection.renewDeadline": Case(
        12, lambda o: run_args(o).leader_election_renew_deadline, 12,
        flag="--leader-election-renew-deadline",
    ),
    "leaderElection.retryPeriod": Case(
        3, lambda o: run_args(o).leader_election_retry_period, 3,
        flag="--leader-election-retry-period",
    ),
    "extraArgs": Case(
        ["--leader-election-identity=probe", "--prometheus-url=http://later:9090"],
        lambda o: (
            container(o)["args"][-2:],
            run_args(o).leader_election_identity,
            run_args(o).prometheus_url,  # after the chart's own: the last one wins
        ),
        (
            ["--leader-election-identity=probe", "--prometheus-url=http://later:9090"],
            "probe",
            "http://later:9090",
        ),
    ),
    "extraEnv": Case(EXTRA_ENV, lambda o: container(o)["env"][-2:], EXTRA_ENV),
    "resources": Case(
        {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        lambda o: container(o)["resources"],
        {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    ),
    "podAnnotations": Case(
        {"example.com/team": "delivery"},
        lambda o: one(o, "Deployment")["spec"]["template"]["metadata"].get("annotations"),
        {"example.com/team": "delivery"},
    ),
    "nodeSelector": Case(
        {"pool": "system"}, lambda o: pod(o).get("nodeSelector"), {"pool": "system"}
    ),
    "tolerations": Case(
        [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        lambda o: pod(o).get("tolerations"),
        [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    ),
    "affinity": Case(AFFINITY, lambda o: pod(o)["affinity"], AFFINITY),
    "topologySpread.enabled": Case(False, spread, None),
    "topologySpread.topologyKey": Case(
        "kubernetes.io/hostname", lambda o: (s := spread(o)) and s["topologyKey"],
        "kubernetes.io/hostname",
    ),
    "topologySpread.whenUnsatisfiable": Case(
        "DoNotSchedule", lambda o: (s := spread(o)) and s["whenUnsatisfiable"], "DoNotSchedule"
    ),
}  # fmt: skip


def test_every_value_is_documented_with_its_default_and_tested() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = documented_values()
    for path, (default, _) in table.items():
        assert yaml.safe_load(first_code(default)) == lookup(values, path), path
    undocumented = [
        leaf for leaf in leaves(values)
        if not any(leaf == path or leaf.startswith(f"{path}.") for path in table)
    ]  # fmt: skip
    assert undocumented == [], "values.yaml has values docs/operations.md does not document"
    assert sorted(table) == sorted(CASES), "documented values and CASES differ"


@pytest.mark.parametrize("path", sorted(documented_values()))
def test_each_documented_value_renders_what_it_says(
    helm: HelmRunner, defaults: Objects, tmp_path: Path, path: str
) -> None:
    case = CASES[path]
    also, value = tmp_path / "also.yaml", tmp_path / "value.yaml"
    also.write_text(yaml.safe_dump(case.also))
    value.write_text(yaml.safe_dump(nested(path, case.value)))
    objects = render(helm, "--values", str(also), "--values", str(value))  # merged in order
    assert case.observe(objects) == case.expected
    assert case.observe(defaults) != case.expected, "the case sets the default"
    run_args(objects)  # tidegate takes every rendered argument, whatever the value
    if case.flag is not None:
        _, what = documented_values()[path]
        assert case.flag in what, f"the docs do not name {case.flag} for {path}"
        args = container(objects)["args"]
        assert [a for a in args if a == case.flag or a.startswith(f"{case.flag}=")], args


def test_defaults_render_the_operators_own_defaults(defaults: Objects) -> None:
    """But for the three the docs name: every namespace, a Prometheus and the Lease's name."""
    rendered = vars(run_args(defaults))
    own = vars(build_parser().parse_args(["run"]))
    differ = {key for key in own if rendered[key] != own[key]}
    assert differ == {"all_namespaces", "prometheus_url", "leader_election_id"}
    # Nothing of the operator's own unless asked for: the chart's arguments only.
    assert not any("identity" in arg for arg in container(defaults)["args"])


def roles_by_namespace(objects: Objects) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for role in (o for o in objects if o["kind"] == "Role"):
        found.setdefault(role["metadata"]["namespace"], []).extend(role["rules"])
    return found


def bound_roles(objects: Objects) -> set[tuple[str, str]]:
    return {
        (b["metadata"]["namespace"], b["roleRef"]["name"])
        for b in objects
        if b["kind"] == "RoleBinding" and b["roleRef"]["kind"] == "Role"
    }


def test_the_roles_follow_the_lease_and_the_notifications_secret(helm: HelmRunner) -> None:
    objects = render(
        helm,
        "--set", "leaderElection.leaseNamespace=coordination",
        "--set", "notifications.secretName=providers",
        "--set", "notifications.secretNamespace=alerting",
    )  # fmt: skip
    roles = roles_by_namespace(objects)
    assert set(roles) == {"coordination", "alerting"}
    assert {r["resources"][0] for r in roles["coordination"]} == {"leases"}
    assert roles["alerting"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["providers"],
         "verbs": ["get"]}
    ]  # fmt: skip
    role_names = {(o["metadata"]["namespace"], o["metadata"]["name"])
                  for o in objects if o["kind"] == "Role"}  # fmt: skip
    assert bound_roles(objects) == role_names
    args = run_args(objects)
    assert (args.leader_election_namespace, args.notifications_secret) == (
        "coordination", "alerting/providers",
    )  # fmt: skip

    # The Secret renamed in the release's namespace: still the one Role, granting that name.
    renamed = roles_by_namespace(render(helm, "--set", "notifications.secretName=providers"))
    assert set(renamed) == {NAMESPACE}
    (secrets,) = [r for r in renamed[NAMESPACE] if r["resources"] == ["secrets"]]
    assert secrets["resourceNames"] == ["providers"]


def test_without_leader_election_no_lease_is_granted_and_two_replicas_are_refused(
    helm: HelmRunner,
) -> None:
    single = render(helm, "--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    roles = roles_by_namespace(single)
    assert [r for rules in roles.values() for r in rules if r["resources"] == ["leases"]] == []
    assert [r["resourceNames"] for r in roles[NAMESPACE]] == [["tidegate-notifications"]]
    assert not any(a.startswith("--leader-election") for a in container(single)["args"])
    result = helm.run(
        "template", RELEASE, str(CHART), *KUBE_VERSION, "--set", "leaderElection.enabled=false"
    )
    assert result.returncode != 0
    assert "leaderElection.enabled=false needs replicaCount=1" in result.stderr


# --- kubeVersion ---------------------------------------------------------------------------

# The Kubernetes minor from which each field of a CRD validation rule works without a
# feature gate to turn on: rules (CRDValidationRules) beta in 1.25, messageExpression added in
# 1.27, reason and fieldPath in 1.28, optionalOldSelf (CRDValidationRatcheting) beta in 1.30.
RULE_FIELD_SINCE = {
    "rule": 25,
    "message": 25,
    "messageExpression": 27,
    "reason": 28,
    "fieldPath": 28,
    "optionalOldSelf": 30,
}

# And of the functions and macros a rule calls: CEL's own, and the Kubernetes list, regex and
# URL libraries and cel-go's first string extensions, there since rules became beta (1.25).
# A function not listed here fails the test until it is added with its Kubernetes minor.
RULE_FUNCTION_SINCE = dict.fromkeys(
    [
        *("has", "all", "exists", "exists_one", "map", "filter", "size", "matches"),
        *("startsWith", "endsWith", "contains", "duration", "timestamp", "int", "uint"),
        *("double", "string", "bool", "bytes", "type", "dyn"),
        *("isSorted", "sum", "min", "max", "indexOf", "lastIndexOf", "find", "findAll"),
        *("url", "isURL", "getScheme", "getHost", "getHostname", "getPort", "getEscapedPath"),
        *("getQuery", "charAt", "lowerAscii", "upperAscii", "replace", "split", "substring"),
        "trim",
    ],
    25,
)


def called(rule: str) -> set[str]:
    """The names a CEL rule calls, string literals left out."""
    code = re.sub(r"r?'(?:[^'\\]|\\.)*'|r?\"(?:[^\"\\]|\\.)*\"", "''", rule)
    return set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(", code))


def validation_rules(tree: Any) -> list[dict[str, Any]]:
    if isinstance(tree, dict):
        found = list(tree.get("x-kubernetes-validations", []))
        return found + [r for v in tree.values() for r in validation_rules(v)]
    if isinstance(tree, list):
        return [r for v in tree for r in validation_rules(v)]
    return []


def test_kube_version_is_the_lowest_that_runs_the_crds_validation_rules(
    helm: HelmRunner,
) -> None:
    rules = [
        rule
        for path in sorted((CHART / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        for rule in validation_rules(doc)
    ]
    assert rules, "the CRDs have no validation rules: this test checks nothing"
    used = {key for rule in rules for key in rule}
    assert used <= set(RULE_FIELD_SINCE), f"add {used - set(RULE_FIELD_SINCE)} to RULE_FIELD_SINCE"
    functions = {name for rule in rules for name in called(rule["rule"])}
    unknown = functions - set(RULE_FUNCTION_SINCE)
    assert not unknown, f"add {unknown} to RULE_FUNCTION_SINCE, with the minor they came in"
    lowest = max(
        [RULE_FIELD_SINCE[key] for key in used] + [RULE_FUNCTION_SINCE[f] for f in functions]
    )
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">=1.{lowest}.0-0"

    def renders_on(version: str) -> bool:
        return helm.run("template", RELEASE, str(CHART), "--kube-version", version).returncode == 0

    assert renders_on(f"1.{lowest}.0")
    assert not renders_on(f"1.{lowest - 1}.99")
    assert renders_on(KUBE_VERSION[1])
