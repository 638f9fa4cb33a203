"""A namespace deleted with a rollout under way in it (an Argo CD app pruned whole, a team's
namespace removed) goes: the hand-back finds the route, the Services and the target already
gone, has nothing to give back to them, and lets the rollout go."""

from __future__ import annotations

import time
from collections.abc import Callable

from rollout_support import Shop, scratch_namespace, set_version

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.waiting import wait_until

DEADLINE = 60  # seconds, as the issue on hostile input asks


def test_a_namespace_deleted_mid_rollout_is_gone_within_a_minute(
    start_shop: Callable[..., Shop], kubectl: KubectlRunner
) -> None:
    # The operator's Lease where it lives in a cluster: not in the namespace being deleted
    # (which would take the Lease with it, and the operator would stand down).
    with scratch_namespace(kubectl, "lease") as lease:
        shop = start_shop(lease_namespace=lease)
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        shop.wait_status(lambda s: s.get("canaryWeight", 0) > 0, "traffic on the canary")
        began = time.monotonic()
        kubectl.check("delete", "namespace", shop.namespace, "--wait=false")
        wait_until(
            lambda: kubectl.run("get", "namespace", shop.namespace).returncode,
            f"namespace {shop.namespace} gone", DEADLINE,
            until=lambda code: code != 0,
        )  # fmt: skip
        took = time.monotonic() - began
        print(f"namespace deleted mid-rollout: gone in {took:.1f} s")
        # The operator let the rollout go (no one else removes its finalizer while it runs).
        assert shop.operator.process.poll() is None
