"""Tidegate writes only what it made: names taken by someone else, and a Deployment that
another rollout already rolls out, are reported and left alone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from rollout_support import events, get, route_host

from tidegate.revisions import template_revision
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

FOREIGN_COPY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  labels: {app: someone-else}
spec:
  replicas: 1
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers: [{name: app, image: registry.k8s.io/pause:3.10}]
"""


def stable_copy_name(kubectl: KubectlRunner, namespace: str) -> str:
    """The name tidegate gives its copy of the Deployment `shop` as it is: `shop-<its
    revision>`. The revision is read from the live object: the API server fills in defaults
    (imagePullPolicy, terminationMessagePath, ...), so the file's template hashes otherwise."""
    target = get(kubectl, namespace, "deployment", "shop")
    return f"shop-{template_revision(target['spec']['template'])}"


def apply_app(kubectl: KubectlRunner, namespace: str) -> None:
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [route_host(namespace, "shop")]
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))


def degraded(kubectl: KubectlRunner, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        conditions = read_status(kubectl, namespace, name).get("conditions", [])
        matching = [c for c in conditions if c["type"] == "Degraded" and c["reason"] == reason]
        return matching[0] if matching else None

    condition: dict[str, Any] = wait_until(found, f"{name} Degraded with {reason}", 60)
    return condition


def test_a_foreign_deployment_with_the_stable_copys_name_is_reported_and_never_written(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    apply_app(kubectl, namespace)
    # A selector that matches the app's pods: a forced apply would have taken it over.
    taken = stable_copy_name(kubectl, namespace)
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=FOREIGN_COPY.replace("NAME", taken))
    # Settled first: its own rollout (pods becoming ready) changes its resourceVersion too.
    kubectl.check(
        "wait", "-n", namespace, "--for=condition=Available", f"deployment/{taken}",
        "--timeout=60s",
    )  # fmt: skip
    kubectl.check("rollout", "status", "-n", namespace, f"deployment/{taken}", "--timeout=60s")
    before = get(kubectl, namespace, "deployment", taken)["metadata"]["resourceVersion"]
    kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        condition = degraded(kubectl, namespace, "shop", "NameConflict")
        reported_at = time.monotonic()
        assert f"Deployment {namespace}/{taken} exists" in condition["message"]
        # Tried again and again, and never written: each change to the target wakes the
        # rollout (the backoff timer would too, but it is up to a minute by now).
        for poke in range(1, 4):
            tries = operator.reconciles()
            kubectl.check(
                "annotate", "--overwrite", "-n", namespace, "deployment/shop",
                f"e2e.tidegate.io/poke={poke}",
            )  # fmt: skip
            wait_until(
                operator.reconciles, f"try {poke}", 30, until=lambda count, t=tries: count > t
            )
        # And still looking 30 s after the conflict was reported (the backoff's own tries).
        tries = operator.reconciles()
        wait_until(
            operator.reconciles, "30 s of tries", 120,
            until=lambda count: count > tries and time.monotonic() - reported_at >= 30,
        )  # fmt: skip
        after = get(kubectl, namespace, "deployment", taken)
        assert after["metadata"]["resourceVersion"] == before
        assert after["metadata"]["labels"] == {"app": "someone-else"}
        managers = {m["manager"] for m in after["metadata"].get("managedFields", [])}
        assert "tidegate" not in managers, managers
        conflicts = [e for e in events(kubectl, namespace) if e["reason"] == "NameConflict"]
        assert len(conflicts) == 1 and conflicts[0]["type"] == "Warning"
        # The user's Deployment still serves: it was never scaled to zero.
        assert get(kubectl, namespace, "deployment", "shop")["spec"]["replicas"] == 2
    finally:
        operator.stop()


def test_a_second_rollout_of_the_same_deployment_is_refused(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    apply_app(kubectl, namespace)
    kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        wait_until(
            lambda: read_status(kubectl, namespace, "shop").get("phase"), "shop initialised", 60,
            until=lambda phase: phase == "Initialized",
        )  # fmt: skip
        second = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
        second["metadata"]["name"] = "shop-2"
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(second))
        condition = degraded(kubectl, namespace, "shop-2", "TargetClaimed")
        assert f"already rolled out by ProgressiveRollout {namespace}/shop" in condition["message"]
        target = get(kubectl, namespace, "deployment", "shop")
        assert target["metadata"]["annotations"]["tidegate.io/claimed-by"] == "shop"
        assert read_status(kubectl, namespace, "shop")["phase"] == "Initialized"
    finally:
        operator.stop()
