"""spec.autoscalerRef on a real control plane: tidegate's copies of the user's HPA, kept in
line with it, the canary's only while a rollout runs, their replica choices left alone, and
the user's HPA idle while its Deployment is at zero and acting again after a hand-back.

There is no metrics-server here: the HPA controller computes no utilization. What it does
without metrics is asserted on: it keeps a target within minReplicas..maxReplicas, and it
leaves a target at zero replicas alone (condition ScalingActive=False, ScalingDisabled).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml
from rollout_support import Shop, copy_of, get

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

USERS_HPA = """
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: shop
  labels: {team: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: shop}
  minReplicas: 2
  maxReplicas: 4
  metrics:
    - type: Resource
      resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 30}
"""
COPIED = ("minReplicas", "maxReplicas", "metrics", "behavior")


def autoscaled_rollout() -> str:
    """The canary example with the HPA named, and a pause to look at a rollout under way."""
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["autoscalerRef"] = {"name": "shop"}
    rollout["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 10}, {"pause": {}}]
    return str(yaml.safe_dump(rollout))


def hpa(kubectl: KubectlRunner, namespace: str, name: str) -> dict[str, Any] | None:
    found = kubectl.run("get", "-n", namespace, f"hpa/{name}", "-o", "json")
    if found.returncode != 0:
        assert "NotFound" in found.stderr, found.stderr
        return None
    return dict(json.loads(found.stdout))


def wait_hpa(
    kubectl: KubectlRunner,
    namespace: str,
    name: str,
    what: str,
    check: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 60,
) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(
        lambda: hpa(kubectl, namespace, name),
        what,
        timeout,
        until=lambda h: h is not None and check(h),
    )
    return found


def scaling_active(found: dict[str, Any]) -> dict[str, Any] | None:
    conditions = found.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "ScalingActive"), None)


def scaling_disabled(found: dict[str, Any]) -> bool:
    condition = scaling_active(found)
    return condition is not None and condition["reason"] == "ScalingDisabled"


def patch_hpa(kubectl: KubectlRunner, namespace: str, spec: dict[str, Any]) -> None:
    body = json.dumps({"spec": spec})
    kubectl.check("patch", "-n", namespace, "hpa/shop", "--type=merge", "-p", body)


def start_autoscaled(
    kubectl: KubectlRunner, namespace: str, start_shop: Callable[..., Shop]
) -> Shop:
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=USERS_HPA)
    return start_shop(autoscaled_rollout())


def test_hpa_copies_follow_the_users_hpa_and_the_canary_copy_only_lives_during_a_rollout(
    kubectl: KubectlRunner, namespace: str, start_shop: Callable[..., Shop]
) -> None:
    shop = start_autoscaled(kubectl, namespace, start_shop)
    users = get(kubectl, namespace, "hpa", "shop")
    stable = wait_hpa(kubectl, namespace, "shop-stable", "the stable HPA copy")
    assert stable["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": copy_of(shop.status()["stableRevision"]),
    }
    assert {k: stable["spec"].get(k) for k in COPIED} == {k: users["spec"].get(k) for k in COPIED}
    labels = stable["metadata"]["labels"]
    assert labels["tidegate.io/rollout"] == "shop" and labels["tidegate.io/role"] == "stable"
    assert labels["team"] == "shop"
    assert hpa(kubectl, namespace, "shop-canary") is None  # no rollout under way

    # The user's HPA stops acting once its Deployment is at zero: it does not undo tidegate.
    wait_hpa(kubectl, namespace, "shop", "the user's HPA idle", scaling_disabled)
    assert get(kubectl, namespace, "deployment", "shop")["spec"]["replicas"] == 0

    # A change to the user's HPA reaches the copy.
    patch_hpa(kubectl, namespace, {"maxReplicas": 6})
    wait_hpa(
        kubectl, namespace, "shop-stable", "maxReplicas 6 on the stable HPA copy",
        lambda h: h["spec"]["maxReplicas"] == 6,
    )  # fmt: skip

    # A rollout: the canary gets its copy while it runs, and loses it at the end.
    kubectl.check(
        "set", "env", "-n", namespace, "deployment/shop", "VERSION=1.1.0", "ERROR_RATE=0"
    )  # fmt: skip
    shop.wait_phase("Paused")
    canary = wait_hpa(kubectl, namespace, "shop-canary", "the canary HPA copy")
    promoted = shop.status()["canaryRevision"]
    assert canary["spec"]["scaleTargetRef"]["name"] == copy_of(promoted)
    assert canary["spec"]["maxReplicas"] == 6
    shop.promote()
    shop.wait_phase("Succeeded")
    wait_until(
        lambda: hpa(kubectl, namespace, "shop-canary"), "the canary HPA copy gone", 30,
        until=lambda h: h is None,
    )  # fmt: skip
    # The stable HPA copy follows the role to the copy that was promoted.
    wait_hpa(
        kubectl, namespace, "shop-stable", "the stable HPA copy on the promoted copy",
        lambda h: h["spec"]["scaleTargetRef"]["name"] == copy_of(promoted),
    )  # fmt: skip


def test_the_count_an_hpa_copy_chose_is_not_reset_and_a_hand_back_restarts_the_users_hpa(
    kubectl: KubectlRunner, namespace: str, start_shop: Callable[..., Shop]
) -> None:
    shop = start_autoscaled(kubectl, namespace, start_shop)
    recorded = shop.status()["replicas"]
    # A bound the HPA controller enforces without metrics: the stable copy goes to 3.
    patch_hpa(kubectl, namespace, {"minReplicas": recorded + 1})
    wanted = recorded + 1
    stable = copy_of(shop.status()["stableRevision"])
    scaled = wait_until(
        lambda: get(kubectl, namespace, "deployment", stable),
        f"the stable HPA copy to scale {stable} to {wanted}",
        90,
        until=lambda d: (
            d["spec"]["replicas"] == wanted and d["status"].get("readyReplicas") == wanted
        ),
    )
    generation = scaled["metadata"]["generation"]
    # Woken (an annotation is worth a reconcile) and reconciled: the count is left alone.
    before = shop.operator.reconciles()
    kubectl.check("annotate", "-n", namespace, "pro/shop", "example.com/poke=1")
    wait_until(shop.operator.reconciles, "a reconcile", 30, until=lambda n: n > before)
    after = get(kubectl, namespace, "deployment", stable)
    assert (after["spec"]["replicas"], after["metadata"]["generation"]) == (wanted, generation)
    assert shop.status()["replicas"] == recorded  # still the user's Deployment's size

    # Deleted: the user's Deployment runs again, and its own HPA acts on it again (it raises
    # it to its minimum; the hand-back takes that count instead of fighting it).
    kubectl.check("delete", "-n", namespace, "pro/shop", "--wait=false")
    wait_until(
        lambda: kubectl.run("get", "-n", namespace, "pro/shop").returncode,
        "the rollout gone", 90, until=lambda code: code != 0,
    )  # fmt: skip
    wait_hpa(
        kubectl, namespace, "shop", "the user's HPA acting again",
        lambda h: not scaling_disabled(h) and scaling_active(h) is not None,
    )  # fmt: skip
    wait_until(
        lambda: get(kubectl, namespace, "deployment", "shop"),
        f"Deployment shop at the HPA's minimum {wanted}", 90,
        until=lambda d: d["spec"]["replicas"] == wanted,
    )  # fmt: skip
    wait_until(
        lambda: (hpa(kubectl, namespace, "shop-stable"), hpa(kubectl, namespace, "shop-canary")),
        "the HPA copies gone with the rollout", 60,
        until=lambda copies: copies == (None, None),
    )  # fmt: skip
