"""`helm install` of the chart into a real cluster, what it creates, what its ServiceAccount
may do, and `helm uninstall`.

On the local control plane the operator's pods run on kwok's fake nodes, where they become
Ready without running the image, so `--wait` waits on the Deployment's real availability.
With TIDEGATE_TEST_KUBECONFIG naming another cluster, the pods really run: set
TIDEGATE_TEST_IMAGE (repository:tag) to an image that cluster can pull. The release watches
only its own namespace, which holds no rollout, so that running operator touches nothing.

The tests of this module run in order: the last one uninstalls the release.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from rollout_support import get, scratch_namespace

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.helm import CHART, HelmRunner
from tidegate_devenv.operator_process import install_crd
from tidegate_devenv.waiting import wait_until

# Its own cluster: the install must create the CRD, so the CRD is deleted first, with
# every rollout in the cluster.
pytestmark = pytest.mark.own_environment

CRD_NAME = "progressiverollouts.tidegate.io"
EXTERNAL = bool(os.environ.get("TIDEGATE_TEST_KUBECONFIG"))

# What the operator asks of the API server, by where in operator/tidegate it is asked:
# (API group, resource[/subresource], verbs, scope). Scope "cluster": on every namespace
# (-A) or cluster-scoped objects, from the ClusterRole; "own": in the operator's namespace
# only, from the Role. tests/e2e/test_deploy_rbac.py holds the same rules against the audit
# log of a real run; here, the chart's rules must be exactly these, and the API server must
# say yes to each for the installed ServiceAccount.
OPERATOR_CALLS: list[tuple[str, str, tuple[str, ...], str]] = [
    # handlers.py: kopf lists and watches them; kube_rollouts.py reads one fresh (get),
    # patches finalizers and clears the request annotations (patch).
    ("tidegate.io", "progressiverollouts", ("get", "list", "watch", "patch"), "cluster"),
    # handlers.py: metric templates, only watched (kopf indices); reconciles read the cache.
    ("tidegate.io", "metrictemplates", ("list", "watch"), "cluster"),
    ("tidegate.io", "clustermetrictemplates", ("list", "watch"), "cluster"),
    # kube_rollouts.py patch_status: all of the rollout's state.
    ("tidegate.io", "progressiverollouts/status", ("patch",), "cluster"),
    # handlers.py: watched (kopf index); workloads.py: server-side apply of the copies (a
    # patch that may create), merge patches of replicas, claims and owners, and the delete
    # (by uid) of a copy whose revision lost its role.
    ("apps", "deployments", ("list", "watch", "create", "patch", "delete"), "cluster"),
    # workloads.py ensure_services (apply), hand_over (patch); watched by handlers.py.
    ("", "services", ("list", "watch", "create", "patch"), "cluster"),
    # autoscalers.py: the user's HPA (watched) and tidegate's copies of it (apply, owner
    # patches, and the canary copy's delete).
    (
        "autoscaling",
        "horizontalpodautoscalers",
        ("list", "watch", "create", "patch", "delete"),
        "cluster",
    ),
    # handlers.py: watched (kopf index); service_router.py reads the cache's endpoints.
    ("discovery.k8s.io", "endpointslices", ("list", "watch"), "cluster"),
    # gatewayapi.py: the route's backendRefs (get after a conflict, merge patch); watched.
    ("gateway.networking.k8s.io", "httproutes", ("get", "list", "watch", "patch"), "cluster"),
    # kube.py create_event (events.k8s.io/v1), and kopf's own core/v1 warnings.
    ("events.k8s.io", "events", ("create",), "cluster"),
    ("", "events", ("create",), "cluster"),
    # kopf: CRDs appearing and going (handlers.py), namespaces with -n/--namespace.
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), "cluster"),
    ("", "namespaces", ("list", "watch"), "cluster"),
    # leadership.py: the client's LeaseLock reads, creates and replaces its Lease.
    ("coordination.k8s.io", "leases", ("get", "create", "update"), "own"),
    # adapters/notifications.py: the notification providers' Secret (by name), read when a
    # rollout with spec.notifications has something to send.
    ("", "secrets", ("get",), "own"),
]
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clustermetrictemplates"}


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    objects: list[dict[str, Any]]  # the manifest helm installed (templates, no CRDs)
    crd_existed_before: bool

    @property
    def account(self) -> str:
        (sa,) = [o for o in self.objects if o["kind"] == "ServiceAccount"]
        return f"system:serviceaccount:{self.namespace}:{sa['metadata']['name']}"

    @property
    def named(self) -> dict[str, str]:
        return {**NAMED, "leases": f"{self.name}-tidegate-leader"}

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found


def crd_exists(kubectl: KubectlRunner) -> bool:
    return kubectl.run("get", "crd", CRD_NAME).returncode == 0


@pytest.fixture(scope="module")
def release(
    environment: EnvironmentInfo, kubectl: KubectlRunner, helm_on_cluster: HelmRunner
) -> Iterator[Release]:
    if not EXTERNAL:
        # The local cluster is this session's own: take the CRD away so that the install
        # must create it (tests that need it after this module find helm's, kept).
        kubectl.check("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")
    existed = crd_exists(kubectl)
    image = os.environ.get("TIDEGATE_TEST_IMAGE")
    with scratch_namespace(kubectl, "t-helm") as namespace:
        name = f"tg-{namespace.rpartition('-')[2]}"  # cluster-wide names: one per run
        values = [
            "--set", f"prometheusUrl={environment.prometheus_url}",
            "--set", f"watchNamespaces={{{namespace}}}",
        ]  # fmt: skip
        if image:
            repository, _, tag = image.rpartition(":")
            values += ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
        helm_on_cluster.check(
            "install", name, str(CHART), "--namespace", namespace, *values,
            "--wait", "--timeout", "180s",
            timeout=240,
        )  # fmt: skip
        try:
            manifest = helm_on_cluster.check("get", "manifest", name, "--namespace", namespace)
            objects = [o for o in yaml.safe_load_all(manifest) if o]
            yield Release(name, namespace, objects, existed)
        finally:
            helm_on_cluster.run("uninstall", name, "--namespace", namespace, "--wait")
            if not crd_exists(kubectl):  # the install failed: put it back for later tests
                install_crd(kubectl)


def test_install_created_the_crd_and_it_is_served(kubectl: KubectlRunner, release: Release) -> None:
    if not EXTERNAL:
        assert not release.crd_existed_before
    kubectl.wait_established(CRD_NAME)
    kubectl.check("get", "progressiverollouts", "-n", release.namespace)


def test_every_object_of_the_release_exists(kubectl: KubectlRunner, release: Release) -> None:
    kinds = sorted(o["kind"] for o in release.objects)
    # Installed with watchNamespaces: the operator's ClusterRole is bound in that namespace
    # (a RoleBinding), and only the cluster-scoped reads cluster-wide.
    assert kinds == sorted(
        [
            "ClusterRole", "ClusterRole", "ClusterRoleBinding", "Deployment",
            "PodDisruptionBudget", "Role", "RoleBinding", "RoleBinding", "Service",
            "ServiceAccount",
        ]
    )  # fmt: skip
    for obj in release.objects:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        found = json.loads(kubectl.check("get", obj["kind"], meta["name"], *where, "-o", "json"))
        assert found["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name


def test_the_deployment_is_available_with_its_metrics_port(
    kubectl: KubectlRunner, release: Release
) -> None:
    deployment = get(
        kubectl, release.namespace, "deploy", release.one("Deployment")["metadata"]["name"]
    )
    assert deployment["status"].get("availableReplicas") == deployment["spec"]["replicas"] == 2
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--metrics-listen=0.0.0.0:9090" in container["args"]
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


def test_the_metrics_service_has_the_operator_pods_as_endpoints(
    kubectl: KubectlRunner, release: Release
) -> None:
    """The Service selects the operator's pods: the API server's EndpointSlices say so."""
    service = release.one("Service")["metadata"]["name"]
    pods = get(
        kubectl, release.namespace, "pods", "-l", f"app.kubernetes.io/instance={release.name}"
    )
    pod_ips = {p["status"]["podIP"] for p in pods["items"] if p["status"].get("podIP")}
    assert len(pod_ips) == 2, pods["items"]

    def ready_endpoints() -> tuple[set[str], list[Any]]:
        slices = get(
            kubectl, release.namespace, "endpointslices", "-l",
            f"kubernetes.io/service-name={service}",
        )["items"]  # fmt: skip
        addresses = {
            address
            for s in slices
            for e in s.get("endpoints") or []
            if e.get("conditions", {}).get("ready")
            for address in e["addresses"]
        }
        ports = [p for s in slices for p in s.get("ports") or []]
        return addresses, ports

    _, ports = wait_until(
        ready_endpoints, f"{service}'s endpoints to be the operator's pods", 60,
        until=lambda found: found[0] == pod_ips,
    )  # fmt: skip
    assert {(p["name"], p["port"]) for p in ports} == {("metrics", 9090)}


def test_the_charts_rules_are_exactly_what_the_operator_calls(release: Release) -> None:
    granted = {
        (group, resource, verb, "own" if obj["kind"] == "Role" else "cluster")
        for obj in release.objects
        if obj["kind"] in ("ClusterRole", "Role")
        for rule in obj["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        (group, resource, verb, scope)
        for group, resource, verbs, scope in OPERATOR_CALLS
        for verb in verbs
    }
    assert granted == needed, (
        f"granted, not called: {sorted(granted - needed)}; called, not granted: "
        f"{sorted(needed - granted)}"
    )


# Calls on one object by name, which the rules grant for that name only (the Lease's is the
# release's: Release.named).
NAMED = {"secrets": "tidegate-notifications"}


def can_i(kubectl: KubectlRunner, account: str, verb: str, group: str, resource: str,
          *where: str, name: str | None = None) -> bool:  # fmt: skip
    plural, _, subresource = resource.partition("/")
    qualified = f"{plural}.{group}" if group else plural
    if name is not None:
        qualified += f"/{name}"
    extra = [f"--subresource={subresource}"] if subresource else []
    result = kubectl.run("auth", "can-i", verb, qualified, *extra, f"--as={account}", *where)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), (result.stdout, result.stderr)
    return answer == "yes"


def test_the_service_account_may_do_what_the_operator_does(
    kubectl: KubectlRunner, release: Release
) -> None:
    with scratch_namespace(kubectl, "t-helm-other") as other:
        refused = []
        for group, resource, verbs, scope in OPERATOR_CALLS:
            plural = resource.partition("/")[0]
            if plural in CLUSTER_SCOPED:
                places: list[tuple[str, ...]] = [()]
            elif scope == "own":
                places = [("-n", release.namespace)]
            else:  # a rollout's namespace: the watched one (watchNamespaces)
                places = [("-n", release.namespace)]
            refused += [
                f"{verb} {resource}.{group or 'core'} {' '.join(where)}"
                for verb in verbs
                for where in places
                if not can_i(
                    kubectl,
                    release.account,
                    verb,
                    group,
                    resource,
                    *where,
                    name=release.named.get(plural),
                )
            ]
        assert refused == [], f"{release.account} may not: {refused}"
        # And not more: no Lease outside its namespace, no delete but of the copies, no secrets.
        for verb, group, resource, where in [
            ("get", "coordination.k8s.io", "leases", ("-n", other)),
            ("update", "coordination.k8s.io", "leases", ("-n", other)),
            ("delete", "coordination.k8s.io", "leases", ("-n", release.namespace)),
            ("update", "coordination.k8s.io", "leases", ("-n", release.namespace)),  # any other
            ("delete", "", "services", ("-n", other)),
            ("delete", "apps", "replicasets", ("-n", other)),
            ("update", "apps", "deployments", ("-n", other)),
            ("get", "", "secrets", ("-n", release.namespace)),
            ("delete", "tidegate.io", "progressiverollouts", ("-n", other)),
            # Outside the watched namespaces: no write, no list across them.
            ("create", "apps", "deployments", ("-n", other)),
            ("patch", "", "services", ("-n", other)),
            ("patch", "gateway.networking.k8s.io", "httproutes", ("-n", other)),
            ("list", "apps", "deployments", ("--all-namespaces",)),
        ]:
            assert not can_i(kubectl, release.account, verb, group, resource, *where), (
                verb, group, resource, where,
            )  # fmt: skip


def test_uninstall_leaves_nothing_but_the_crd(
    kubectl: KubectlRunner, helm_on_cluster: HelmRunner, release: Release
) -> None:
    """The last test of the module: the release goes, the CRD (from crds/) stays."""
    helm_on_cluster.check(
        "uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "120s"
    )
    for obj in release.objects:
        meta = obj["metadata"]
        where = ["-n", meta["namespace"]] if "namespace" in meta else []
        result = kubectl.run("get", obj["kind"], meta["name"], *where)
        assert "NotFound" in result.stderr, (obj["kind"], meta["name"], result.stdout)
    # The pods go with their ReplicaSet, through the garbage collector.
    instance = f"app.kubernetes.io/instance={release.name}"
    wait_until(
        lambda: get(kubectl, release.namespace, "all", "-l", instance)["items"],
        "the release's pods and ReplicaSets gone", 60, until=lambda items: items == [],
    )  # fmt: skip
    # Helm's own record of the release (a Secret) goes too.
    assert (
        get(kubectl, release.namespace, "secrets", "-l", f"owner=helm,name={release.name}")["items"]
        == []
    )
    assert (
        helm_on_cluster.run("status", release.name, "--namespace", release.namespace).returncode
        != 0
    )
    kubectl.wait_established(CRD_NAME, timeout=10)
