"""A canary with no gateway and no mesh (trafficRouting.podRatio) end to end: examples/no-mesh,
a Deployment and its Service only, with the operator, the real API server, Prometheus, and
requests sent to the Service by its cluster name through the dev gateway (which sends them
to the Service's ready pods, as kube-proxy would)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import yaml
from rollout_support import Shop, copy_of, get, set_version, wait_idle

from tidegate.adapters.workloads import REVISION_LABEL
from tidegate_devenv.loadgen import generate
from tidegate_devenv.paths import REPO
from tidegate_devenv.waiting import wait_until

NO_MESH = REPO / "examples" / "no-mesh"
REPLICAS = 4  # examples/no-mesh/app.yaml
SAMPLE = 200  # requests per measured share


def start(start_shop: Callable[..., Shop], namespace: str, rollout: str | None = None) -> Shop:
    """examples/no-mesh (as it is, or its app with `rollout`), load on Service shop."""
    options = {"rollout": rollout} if rollout else {"as_is": True}
    return start_shop(example=NO_MESH, load_host=f"shop.{namespace}.svc", **options)


def canary_pods_seen(shop: Shop) -> float:
    """The new version's share of SAMPLE requests to Service shop, in pods of REPLICAS."""
    result = asyncio.run(
        generate(
            shop.environment.gateway_url,
            host=f"shop.{shop.namespace}.svc",
            count=SAMPLE,
            concurrency=4,
        )
    )
    seen = Counter(version for _, version, _ in result.samples)
    assert set(seen) <= {"1.0.0", "1.1.0"} and sum(seen.values()) == SAMPLE, seen
    return seen["1.1.0"] / SAMPLE * REPLICAS


def selector(shop: Shop) -> dict[str, str]:
    found: dict[str, str] = get(shop.kubectl, shop.namespace, "service", "shop")["spec"]["selector"]
    return found


def test_the_share_follows_the_pods_and_the_promotion_pins_the_service(
    start_shop: Callable[..., Shop], namespace: str
) -> None:
    rollout = yaml.safe_load((NO_MESH / "rollout.yaml").read_text())
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]
    rollout["spec"]["strategy"]["canary"]["steps"] = steps
    shop = start(start_shop, namespace, yaml.safe_dump(rollout))
    stable = shop.status()["stableRevision"]
    assert selector(shop)[REVISION_LABEL] == stable  # stable alone between rollouts
    set_version(shop.kubectl, namespace, "1.1.0")
    for weight, (canary, effective), index in ((25, (1, 25), 1), (75, (3, 75), 3)):
        status = shop.wait_status(
            lambda s, i=index: s.get("phase") == "Paused" and s.get("currentStepIndex") == i,
            f"the pause after setWeight {weight}",
        )
        assert (status["canaryWeight"], status["effectiveWeight"]) == (weight, effective)
        assert REVISION_LABEL not in selector(shop)  # both copies behind the Service
        sizes = {role: shop.copy(role)["spec"]["replicas"] for role in ("stable", "canary")}
        assert sizes == {"stable": REPLICAS - canary, "canary": canary}, sizes
        shop.caught_up()
        pods = canary_pods_seen(shop)
        assert canary - 1 <= pods <= canary + 1, f"{pods:.2f} pods' share, {canary} planned"
        shop.promote()
    done = shop.wait_phase("Succeeded", 90)
    assert done["stableRevision"] != stable and done["effectiveWeight"] == 0
    assert selector(shop)[REVISION_LABEL] == done["stableRevision"]
    assert shop.copy("stable")["spec"]["replicas"] == REPLICAS
    wait_idle(shop.kubectl, namespace, copy_of(stable))
    shop.caught_up()
    assert canary_pods_seen(shop) == REPLICAS  # the new version alone
    # Every request of the steady load was answered by a version, through every step, from
    # the app's first answer on (the load starts as the app is created: until its Service
    # and pods reach the gateway, 2 s later, nothing of the app's can answer).
    samples = shop.load.samples
    first = next(i for i, (_, version, _) in enumerate(samples) if version)
    dropped = Counter(code for _, version, code in samples[first:] if not version)
    assert not dropped, dropped


def test_a_failing_canary_is_rolled_back_and_the_service_pinned_to_stable(
    start_shop: Callable[..., Shop], namespace: str
) -> None:
    shop = start(start_shop, namespace)
    stable = shop.status()["stableRevision"]
    # Every request to the new version fails: a quarter of the Service's at setWeight 25.
    set_version(shop.kubectl, namespace, "1.1.0", error_rate=1.0)
    status = shop.wait_phase("Failed", 120)
    assert (status["stableRevision"], status["canaryWeight"]) == (stable, 0)
    assert status["effectiveWeight"] == 0
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["reason"] == "AnalysisFailed", degraded
    assert selector(shop)[REVISION_LABEL] == stable
    wait_until(
        lambda: shop.copy("stable")["spec"]["replicas"],
        "stable back at full size", 30, until=lambda n: n == REPLICAS,
    )  # fmt: skip
    wait_idle(shop.kubectl, namespace, copy_of(status["canaryRevision"]))
    shop.caught_up()
    assert canary_pods_seen(shop) == 0  # the old version alone
