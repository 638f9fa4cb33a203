"""deploy/kustomize's RBAC, held against what the operator really asks of a real API server.

The operator runs here as its ServiceAccount (with a token from the TokenRequest API),
watching one namespace, and takes the example application through a canary: adoption, a
weight step, a pause ended by the promote annotation, a second weight and promotion, with an
HPA on the Deployment (so its copies are created, and the canary's deleted at the end). The
local API server's audit log then says which requests that account made. Each must have been
allowed and be granted by the installed rules; and every verb the rules grant must have been
used, or be listed in ALLOWED_UNUSED with the reason it is kept. So a new API call without a
grant fails here, and so does a grant nothing needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_support import (
    ACCOUNT_NAME,
    ACCOUNT_NAMESPACE,
    KUSTOMIZE,
    canary_weight_in_route,
    copies,
    copy_of,
    events,
    get,
    install_operator_rbac,
    scratch_namespace,
    service_account_kubeconfig,
    set_version,
    unique_host,
)

from tidegate.adapters.notifications import DEFAULT_SECRET
from tidegate.leadership import DEFAULT_LEASE_NAME
from tidegate_devenv import audit
from tidegate_devenv.audit import ApiCall, AuditedRequest
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator, stop_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

ACCOUNT = f"system:serviceaccount:{ACCOUNT_NAMESPACE}:{ACCOUNT_NAME}"
PROMOTE_ANNOTATION = "tidegate.io/promote"

# (apiGroup, resource[/subresource], verb) granted though the run below does not use it, with
# the reason it is kept. (As deployed,
# with -A, it makes the same calls cluster-wide, minus the namespace list and watch that kopf
# makes with -n, which the Helm chart's `watchNamespaces` value gives it.) A grant needed only
# on a path this run cannot take belongs here; keep it short: the token's holder gets each one.
ALLOWED_UNUSED: dict[tuple[str, str, str], str] = {
    ("", "events", "create"): "kopf posts a core/v1 Event when one of its handlers fails; "
    "a healthy run has none",
    ("tidegate.io", "progressiverollouts", "get"): "reads come from the watch; a rollout is "
    "read from the API server only if this process wrote it and the watch has not yet "
    "brought that write back",
    ("gateway.networking.k8s.io", "httproutes", "get"): "reads come from the watch; a route "
    "is read from the API server only after a write to it met a conflict",
    ("", "secrets", "get"): "the notifications Secret (by name only): read when a rollout "
    "with spec.notifications has something to send; this run's rollout has none",
}

Triple = tuple[str, str, str]
Grant = tuple[str, str, str, str | None]  # a triple, and the namespace it is granted in


@pytest.fixture(scope="module")
def installed_rbac(kubectl: KubectlRunner) -> list[dict[str, Any]]:
    """Everything in deploy/kustomize but the operator's own Deployment, as installed."""
    return install_operator_rbac(kubectl)


# --- what the rules grant --------------------------------------------------------------------


def account_grants(objects: list[dict[str, Any]]) -> set[Grant]:
    """What the installed objects grant the ServiceAccount: (apiGroup, resource[/subresource],
    verb, namespace), the namespace None for a grant at every scope (a ClusterRoleBinding's)
    and a RoleBinding's own namespace for one of its grants. The operator watches
    cluster-scoped objects (CRDs, namespaces) and, as deployed (-A), every namespace: that is
    the ClusterRole's; the leader-election Lease is the Role's, in the operator's namespace.
    """
    subject = {"kind": "ServiceAccount", "name": ACCOUNT_NAME, "namespace": ACCOUNT_NAMESPACE}
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
    }
    grants: set[Grant] = set()
    for binding in objects:
        if subject not in binding.get("subjects", []):
            continue
        assert binding["kind"] in ("ClusterRoleBinding", "RoleBinding"), binding["kind"]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        role_namespace = namespace if ref["kind"] == "Role" else None
        rules = roles[(ref["kind"], role_namespace, ref["name"])]["rules"]
        for rule in rules:
            # Wildcards and resourceNames would need more than set arithmetic below; the
            # named objects granted (the notifications Secret, `get`; the operator's own
            # Lease, `get` and `update`, its default name here) count as their resource.
            named = rule.get("resourceNames")
            assert named in (None, [DEFAULT_SECRET], [DEFAULT_LEASE_NAME]), rule
            assert "nonResourceURLs" not in rule, rule
            assert not any("*" in rule[key] for key in ("apiGroups", "resources", "verbs")), rule
            grants |= {
                (group, resource, verb, namespace)
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }
    assert grants, f"nothing in {KUSTOMIZE} binds a role to {ACCOUNT}"
    return grants


def allows(grants: set[Grant], call: ApiCall, namespace: str | None) -> bool:
    """Whether `grants` allow `call`, made in `namespace` (None: cluster-scoped or across
    namespaces, which only a cluster-wide grant allows)."""
    group, resource, verb = triple(call)
    if (group, resource, verb, None) in grants:
        return True
    return namespace is not None and (group, resource, verb, namespace) in grants


def describe_grant(grant: Grant) -> str:
    group, resource, verb, namespace = grant
    return f"  {verb} {group or 'core'}/{resource}" + (f" in {namespace}" if namespace else "")


# --- what the operator asked -----------------------------------------------------------------


def needed_where(requests: Iterable[AuditedRequest]) -> set[tuple[ApiCall, str | None]]:
    """The calls made, as RBAC must allow them, each with the namespace it was made in (None
    for a cluster-scoped call or one across namespaces).

    A server-side apply that creates its object is a PATCH answered 201, which the API server
    also authorises as a create: the create is needed though no request says so.
    """
    calls: set[tuple[ApiCall, str | None]] = set()
    for request in requests:
        if request.call is None:
            continue
        namespace = request.namespace if request.call.namespaced else None
        calls.add((request.call, namespace))
        if request.call.verb == "patch" and request.code == 201:
            calls.add((dataclasses.replace(request.call, verb="create"), namespace))
    return calls


def needed(requests: Iterable[AuditedRequest]) -> set[ApiCall]:
    """The calls made, wherever they were made."""
    return {call for call, _ in needed_where(requests)}


def triple(call: ApiCall) -> Triple:
    return (call.group, call.rbac_resource, call.verb)


def describe(calls: Iterable[ApiCall]) -> str:
    return "\n".join(f"  {call}" for call in sorted(calls))


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorRun:
    namespace: str
    log: Path
    weights: list[int]  # the canary's weights in the HTTPRoute, each change as it was seen
    failure: str | None  # why the run did not get to the end, if it did not


# On the example's Deployment: tidegate's copies of it get HPA copies too.
HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "shop"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
        "minReplicas": 2,
        "maxReplicas": 4,
    },
}


def apply_example(kubectl: KubectlRunner, namespace: str) -> None:
    """examples/canary with a host of its own, and steps that end in a pause to promote from;
    with an HPA (spec.autoscalerRef).

    No metrics: Prometheus is no Kubernetes API, and an analysed step makes the same calls.
    """
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [unique_host(namespace)]
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]
    rollout["spec"]["strategy"]["canary"]["steps"] = steps
    rollout["spec"]["analysis"] = {"interval": "2s"}  # each weight is held this long
    rollout["spec"]["autoscalerRef"] = {"name": "shop"}
    manifest = yaml.safe_dump_all([*app, HPA, rollout])
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=manifest)


def follow(kubectl: KubectlRunner, namespace: str, phases: set[str], weights: list[int]) -> None:
    """Poll until the rollout's phase is one of `phases`, noting each canary weight seen."""

    def observe() -> dict[str, Any]:
        weight = canary_weight_in_route(kubectl, namespace)
        if not weights or weights[-1] != weight:
            weights.append(weight)
        return read_status(kubectl, namespace, "shop")

    what = f"the rollout's phase to be one of {sorted(phases)}"
    wait_until(observe, what, 90, until=lambda status: status.get("phase") in phases)


@pytest.fixture(scope="module")
def operator_run(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    installed_rbac: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorRun]:
    """One canary, start to promotion, with the operator as its ServiceAccount; then stopped,
    so that every request it made has its final audit event."""
    workdir = tmp_path_factory.mktemp("operator-as-service-account")
    kubeconfig = service_account_kubeconfig(kubectl, workdir / "sa.kubeconfig")
    log = workdir / "operator.log"
    with scratch_namespace(kubectl, "t-rbac") as namespace:
        # As deployed: the Lease in the operator's own namespace, where the Role grants it.
        operator = start_operator(
            environment,
            log,
            namespaces=[namespace],
            kubeconfig=kubeconfig,
            lease_namespace=ACCOUNT_NAMESPACE,
        )
        weights: list[int] = []
        failure = None
        try:
            apply_example(kubectl, namespace)
            follow(kubectl, namespace, {"Initialized"}, weights)
            set_version(kubectl, namespace, "1.1.0")
            follow(kubectl, namespace, {"Paused", "Failed"}, weights)
            kubectl.check(
                "annotate", "-n", namespace, "progressiverollout/shop", f"{PROMOTE_ANNOTATION}=yes"
            )
            follow(kubectl, namespace, {"Succeeded", "Failed"}, weights)
            # The status is written before the actions it decides: the end of the rollout
            # (the stable copy before removed, the canary's HPA copy deleted) lands a moment
            # after the phase shows, and must be done by the operator under test before it
            # stops.
            wait_until(
                lambda: copies(kubectl, namespace), "the stable copy before removed", 60,
                until=lambda found: len(found) == 1,
            )  # fmt: skip
            wait_until(
                lambda: kubectl.run("get", "-n", namespace, "hpa/shop-canary").returncode,
                "the canary's HPA copy deleted", 60, until=lambda code: code != 0,
            )  # fmt: skip
        except (AssertionError, TimeoutError) as error:
            # Kept for the test of the run itself: a refused request that stalls the rollout
            # is better told by the audit tests below than by a timeout here.
            failure = str(error)
        finally:
            stop_operator(operator)
        yield OperatorRun(namespace, log, weights, failure)


@pytest.fixture(scope="module")
def operator_requests(
    environment: EnvironmentInfo, operator_run: OperatorRun
) -> list[AuditedRequest]:
    """What the ServiceAccount asked of the API server, from the audit log."""
    if os.environ.get("TIDEGATE_TEST_KUBECONFIG"):
        pytest.skip(
            "TIDEGATE_TEST_KUBECONFIG names an external cluster: its API server's audit log "
            "(if it keeps one) is not readable here"
        )
    log = audit.audit_log(Path(environment.state_dir))
    requests = audit.requests_by(ACCOUNT, audit.read_events(log))
    assert requests, f"no request of {ACCOUNT} in {log}"
    return requests


# --- the tests -------------------------------------------------------------------------------


def test_operator_takes_a_canary_to_promotion_as_its_service_account(
    kubectl: KubectlRunner, operator_run: OperatorRun
) -> None:
    run, namespace = operator_run, operator_run.namespace
    log = run.log.read_text()
    assert run.failure is None, f"{run.failure}\n--- operator log ---\n{log[-3000:]}"
    assert "forbidden" not in log.lower(), log[-3000:]
    # Adopted, then 10 % (held until promoted by hand), 50 %, and all back on stable.
    assert [w for w in run.weights if w] == [10, 50], run.weights
    assert canary_weight_in_route(kubectl, namespace) == 0
    rollout = get(kubectl, namespace, "progressiverollout", "shop")
    assert rollout["status"]["phase"] == "Succeeded", rollout["status"]
    assert PROMOTE_ANNOTATION not in rollout["metadata"].get("annotations", {})
    # The promoted copy is the only one left: the stable copy before it was removed.
    deployments = {d["metadata"]["name"]: d for d in get(kubectl, namespace, "deploy")["items"]}
    assert deployments["shop"]["spec"]["replicas"] == 0
    stable = copy_of(rollout["status"]["stableRevision"])
    assert set(copies(kubectl, namespace)) == {stable}
    stable_env = deployments[stable]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VERSION", "value": "1.1.0"} in stable_env
    kubectl.check("get", "-n", namespace, "svc/shop-stable", "svc/shop-canary")
    kubectl.check("get", "-n", namespace, "hpa/shop-stable")
    wait_until(
        lambda: kubectl.run("get", "-n", namespace, "hpa/shop-canary").returncode,
        "the canary's HPA copy deleted", 30, until=lambda code: code != 0,
    )  # fmt: skip
    reasons = {e["reason"] for e in events(kubectl, namespace)}
    assert reasons >= {"Initialized", "AwaitingPromotion", "Resumed", "Promoted"}, reasons


def test_no_request_of_the_operator_was_refused(operator_requests: list[AuditedRequest]) -> None:
    refused = sorted(
        {
            f"  {r.call or r.uri}: {r.code} "
            f"{r.annotations.get('authorization.k8s.io/reason', '')}".rstrip()
            for r in operator_requests
            if r.code == 403
        }
    )
    assert not refused, f"the API server refused {ACCOUNT}:\n" + "\n".join(refused)


def test_rbac_grants_every_call_the_operator_made(
    installed_rbac: list[dict[str, Any]],
    operator_requests: list[AuditedRequest],
    record_property: Callable[[str, object], None],
) -> None:
    calls = needed(operator_requests)
    # The record: shown with -s or -rA, and kept in a JUnit report.
    print(f"\nAPI calls of {ACCOUNT}:\n{describe(calls)}")
    others = sorted({r.uri.partition("?")[0] for r in operator_requests if r.call is None})
    print(f"non-resource requests (Kubernetes grants these to every user): {others}")
    record_property("api_calls", [str(c) for c in sorted(calls)])
    grants = account_grants(installed_rbac)
    missing = {
        (call, namespace)
        for call, namespace in needed_where(operator_requests)
        if not allows(grants, call, namespace)
    }
    assert not missing, (
        f"the operator made calls that {KUSTOMIZE / 'rbac.yaml'} does not grant; add them "
        f"there and in the Helm chart's templates/rbac.yaml:\n"
        + "\n".join(f"  {call} in {namespace}" for call, namespace in sorted(missing, key=str))
    )


def test_rbac_grants_nothing_the_operator_does_not_use(
    installed_rbac: list[dict[str, Any]], operator_requests: list[AuditedRequest]
) -> None:
    needs = needed_where(operator_requests)
    grants = account_grants(installed_rbac)

    def used(grant: Grant) -> bool:
        *granted_triple, where = grant
        return any(
            list(triple(call)) == granted_triple and (where is None or namespace == where)
            for call, namespace in needs
        )

    unused = {g for g in grants if not used(g) and g[:3] not in ALLOWED_UNUSED}
    assert not unused, (
        "granted but never used by the operator; remove them from both RBAC manifests, or "
        "list them in ALLOWED_UNUSED with the reason they are needed:\n"
        + "\n".join(describe_grant(g) for g in sorted(unused, key=str))
    )
    # An entry may be used in some runs (a rare path); it is stale once no longer granted.
    stale = {t for t in ALLOWED_UNUSED if t not in {g[:3] for g in grants}}
    assert not stale, f"ALLOWED_UNUSED entries no longer granted: {sorted(stale)}"


@pytest.mark.usefixtures("installed_rbac")
def test_service_account_cannot_delete_or_read_secrets(kubectl: KubectlRunner) -> None:
    # What the real server decides, default roles included, not only what rbac.yaml says.
    # (It may delete Deployments, its copies; it may already scale any Deployment to zero.)
    for verb, resource in [("delete", "services"), ("delete", "pods"), ("get", "secrets")]:
        result = kubectl.run("auth", "can-i", verb, resource, f"--as={ACCOUNT}", "-n", "default")
        assert result.stdout.strip() == "no", (verb, resource, result.stdout, result.stderr)


def test_a_grant_removed_at_run_time_is_reported_by_verb_and_resource_then_recovered(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    installed_rbac: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    role = next(o for o in installed_rbac if o["kind"] == "ClusterRole")
    without_patch = _restorable(role)
    for rule in without_patch["rules"]:
        if "deployments" in rule.get("resources", []):
            rule["verbs"] = [v for v in rule["verbs"] if v != "patch"]
    kubeconfig = service_account_kubeconfig(kubectl, tmp_path / "sa.kubeconfig")
    with scratch_namespace(kubectl, "t-rbac") as namespace:
        kubectl.check("apply", "-f", "-", stdin=yaml.safe_dump(without_patch))
        operator = start_operator(
            environment,
            tmp_path / "operator.log",
            namespaces=[namespace],
            kubeconfig=kubeconfig,
            lease_namespace=ACCOUNT_NAMESPACE,
        )
        try:
            apply_example(kubectl, namespace)

            def forbidden() -> dict[str, Any] | None:
                conditions = read_status(kubectl, namespace, "shop").get("conditions", [])
                found = [c for c in conditions if c["reason"] == "Forbidden"]
                return found[0] if found else None

            condition = wait_until(forbidden, "the missing grant reported", 60)
            assert condition["type"] == "Degraded" and condition["status"] == "True"
            assert 'cannot patch resource "deployments"' in condition["message"], condition
            assert ACCOUNT in condition["message"]
        finally:
            kubectl.check("apply", "-f", "-", stdin=yaml.safe_dump(_restorable(role)))
        try:
            # Granted again: the next try (at most a minute later) goes through.
            wait_until(
                lambda: read_status(kubectl, namespace, "shop"), "the rollout to recover", 90,
                until=lambda s: s.get("phase") == "Initialized"
                and all(c["reason"] != "Forbidden" for c in s.get("conditions", [])),
            )  # fmt: skip
        finally:
            stop_operator(operator)


def _restorable(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy to apply again: what the server adds to metadata left out."""
    restored = json.loads(json.dumps(obj))
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        restored["metadata"].pop(key, None)
    return restored
