"""deploy/kustomize's RBAC, held against what the operator really asks of a real API server.

The operator runs here as its ServiceAccount (with a token from the TokenRequest API),
watching one namespace, and takes the example application through a canary: adoption, a
weight step, a pause ended by the promote annotation, a second weight and promotion. The
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
    canary_weight_in_route,
    events,
    get,
    scratch_namespace,
    set_version,
    unique_host,
)

from tidegate_devenv import audit
from tidegate_devenv.audit import ApiCall, AuditedRequest
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator, stop_operator
from tidegate_devenv.paths import CANARY_EXAMPLE, REPO
from tidegate_devenv.waiting import wait_until

KUSTOMIZE = REPO / "deploy" / "kustomize"
ACCOUNT_NAMESPACE, ACCOUNT_NAME = "tidegate-system", "tidegate"
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
}

Triple = tuple[str, str, str]


@pytest.fixture(scope="module")
def installed_rbac(kubectl: KubectlRunner) -> list[dict[str, Any]]:
    """Everything in deploy/kustomize but the operator's own Deployment, as installed."""
    rendered = kubectl.check("kustomize", str(KUSTOMIZE))
    objects = [o for o in yaml.safe_load_all(rendered) if o and o["kind"] != "Deployment"]
    kubectl.apply_text(yaml.safe_dump_all(objects))
    kubectl.check("wait", "--for=condition=Established", "crd/progressiverollouts.tidegate.io")
    return objects


# --- what the rules grant --------------------------------------------------------------------


def account_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules the installed objects grant the ServiceAccount, cluster-wide.

    Only ClusterRoleBindings are read: the operator watches cluster-scoped objects (CRDs,
    namespaces) and, as deployed (-A), every namespace, which no RoleBinding can grant.
    """
    subject = {"kind": "ServiceAccount", "name": ACCOUNT_NAME, "namespace": ACCOUNT_NAMESPACE}
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ClusterRole"}
    rules: list[dict[str, Any]] = []
    for binding in objects:
        if subject not in binding.get("subjects", []):
            continue
        assert binding["kind"] == "ClusterRoleBinding", (
            f"{binding['kind']} {binding['metadata']['name']}: this test reads only "
            "ClusterRoleBindings; teach account_rules() about namespaced grants"
        )
        assert binding["roleRef"]["kind"] == "ClusterRole", binding["roleRef"]
        rules += roles[binding["roleRef"]["name"]]["rules"]
    assert rules, f"nothing in {KUSTOMIZE} binds a role to {ACCOUNT}"
    for rule in rules:
        # Wildcards and resourceNames would need more than set arithmetic below.
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        assert not any("*" in rule[key] for key in ("apiGroups", "resources", "verbs")), rule
    return rules


def granted(rules: list[dict[str, Any]]) -> set[Triple]:
    """Every (apiGroup, resource[/subresource], verb) the rules allow, at any scope."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- what the operator asked -----------------------------------------------------------------


def needed(requests: Iterable[AuditedRequest]) -> set[ApiCall]:
    """The calls made, as RBAC must allow them.

    A server-side apply that creates its object is a PATCH answered 201, which the API server
    also authorises as a create: the create is needed though no request says so.
    """
    calls: set[ApiCall] = set()
    for request in requests:
        if request.call is None:
            continue
        calls.add(request.call)
        if request.call.verb == "patch" and request.code == 201:
            calls.add(dataclasses.replace(request.call, verb="create"))
    return calls


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


def service_account_kubeconfig(kubectl: KubectlRunner, path: Path) -> Path:
    """The admin kubeconfig's cluster, with the ServiceAccount's token as the user."""
    token = kubectl.check("create", "token", ACCOUNT_NAME, "-n", ACCOUNT_NAMESPACE).strip()
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


def apply_example(kubectl: KubectlRunner, namespace: str) -> None:
    """examples/canary with a host of its own, and steps that end in a pause to promote from.

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
    manifest = yaml.safe_dump_all([*app, rollout])
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
        operator = start_operator(environment, log, namespaces=[namespace], kubeconfig=kubeconfig)
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
    deployments = {d["metadata"]["name"]: d for d in get(kubectl, namespace, "deploy")["items"]}
    assert deployments["shop"]["spec"]["replicas"] == 0
    assert deployments["shop-canary"]["spec"]["replicas"] == 0
    stable_env = deployments["shop-stable"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VERSION", "value": "1.1.0"} in stable_env
    kubectl.check("get", "-n", namespace, "svc/shop-stable", "svc/shop-canary")
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
    grants = granted(account_rules(installed_rbac))
    missing = {c for c in calls if triple(c) not in grants}
    assert not missing, (
        f"the operator made calls that {KUSTOMIZE / 'rbac.yaml'} does not grant; add them "
        f"there and in the Helm chart's templates/rbac.yaml:\n{describe(missing)}"
    )


def test_rbac_grants_nothing_the_operator_does_not_use(
    installed_rbac: list[dict[str, Any]], operator_requests: list[AuditedRequest]
) -> None:
    used = {triple(c) for c in needed(operator_requests)}
    grants = granted(account_rules(installed_rbac))
    unused = grants - used - ALLOWED_UNUSED.keys()
    assert not unused, (
        "granted but never used by the operator; remove them from both RBAC manifests, or "
        "list them in ALLOWED_UNUSED with the reason they are needed:\n"
        + "\n".join(
            f"  {verb} {group or 'core'}/{resource}" for group, resource, verb in sorted(unused)
        )
    )
    # An entry may be used in some runs (a rare path); it is stale once no longer granted.
    stale = {t for t in ALLOWED_UNUSED if t not in grants}
    assert not stale, f"ALLOWED_UNUSED entries no longer granted: {sorted(stale)}"


@pytest.mark.usefixtures("installed_rbac")
def test_service_account_cannot_delete_or_read_secrets(kubectl: KubectlRunner) -> None:
    # What the real server decides, default roles included, not only what rbac.yaml says.
    for verb, resource in [("delete", "deployments.apps"), ("get", "secrets")]:
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
            environment, tmp_path / "operator.log", namespaces=[namespace], kubeconfig=kubeconfig
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
