"""Deleting a ProgressiveRollout: the application handed back to the user's Deployment, or,
with spec.onDelete: keep, left exactly as it is."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import yaml
from rollout_support import Shop, copies, get, resource_versions, set_version

from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until


def gone(shop: Shop, *what: str) -> bool:
    result = shop.kubectl.run("get", "-n", shop.namespace, *what, "-o", "name")
    return result.returncode != 0 and "NotFound" in result.stderr


def test_a_rollout_deleted_mid_rollout_hands_the_application_back(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop()
    kubectl, namespace = shop.kubectl, shop.namespace
    set_version(kubectl, namespace, "1.1.0")
    shop.wait_status(lambda s: s.get("currentStepIndex", 0) >= 1, "the second step")
    deleted_at = time.monotonic()
    kubectl.check("delete", "-n", namespace, "progressiverollout/shop", "--wait=false")
    wait_until(lambda: gone(shop, "progressiverollout/shop"), "the rollout gone", 90)

    # The user's Deployment serves again, at its size, ready; the route is theirs again.
    target = get(kubectl, namespace, "deployment", "shop")
    assert target["spec"]["replicas"] == 2
    assert target["status"].get("readyReplicas") == 2
    assert "tidegate.io/claimed-by" not in target["metadata"].get("annotations", {})
    route = get(kubectl, namespace, "httproute", "shop")
    (rule,) = route["spec"]["rules"]
    assert [r["name"] for r in rule["backendRefs"]] == ["shop"]
    # tidegate's copies and Services go with the rollout (the garbage collector).
    wait_until(
        lambda: not copies(kubectl, namespace)
        and gone(shop, "service/shop-stable")
        and gone(shop, "service/shop-canary"),
        "the copies and tidegate's Services gone", 60,
    )  # fmt: skip
    # No request failed on the way, and what answers now is the user's Deployment.
    during = shop.load.samples_between(deleted_at, time.monotonic())
    assert during and all(code == 200 for _, _, code in during), Counter(
        (v, c) for _, v, c in during
    )
    shop.caught_up()  # the gateway has applied all of it (it lags the writes by its delay)
    after = shop.traffic_after(time.monotonic(), 60)
    assert {v for _, v, _ in after} == {"1.1.0"}  # the template it holds


def test_a_rollout_deleted_with_on_delete_keep_leaves_everything(
    start_shop: Callable[..., Shop],
) -> None:
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["onDelete"] = "keep"
    shop = start_shop(yaml.safe_dump(rollout))
    kubectl, namespace = shop.kubectl, shop.namespace
    assert "finalizers" not in get(kubectl, namespace, "pro", "shop")["metadata"]

    # The user's Deployment is released (scaled to zero) just after the Initialized status is
    # written, and the deployment controller then updates its status: both are done before
    # the versions below are taken, or they would differ for that alone.
    def settled(deployment: dict[str, Any]) -> bool:
        status = deployment.get("status") or {}
        observed = status.get("observedGeneration") == deployment["metadata"]["generation"]
        return deployment["spec"]["replicas"] == 0 and observed and not status.get("replicas")

    wait_until(
        lambda: get(kubectl, namespace, "deployment", "shop"),
        "Deployment/shop released and observed at zero", 30, until=settled,
    )  # fmt: skip
    before = resource_versions(kubectl, namespace, "deployment,service,httproute")
    kubectl.check("delete", "-n", namespace, "progressiverollout/shop")
    # Gone at once (no finalizer held it for a hand-back), and nothing it made was touched:
    # the user's Deployment still at zero, the copies serving, the route on them.
    assert gone(shop, "progressiverollout/shop")
    assert resource_versions(kubectl, namespace, "deployment,service,httproute") == before
    assert get(kubectl, namespace, "deployment", "shop")["spec"]["replicas"] == 0
    served = shop.traffic_after(time.monotonic(), 60)
    assert {v for _, v, _ in served} == {"1.0.0"} and all(c == 200 for _, _, c in served)
