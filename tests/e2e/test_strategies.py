"""Blue/green, A/B header routing and mirroring end to end: the operator, the real API
server, Prometheus, and real requests through the dev gateway."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_api_client import PrometheusConnect
from rollout_support import (
    BackgroundLoad,
    RouteWatch,
    Shop,
    copies,
    copy_of,
    events,
    get,
    resource_versions,
    set_version,
    wait_replicas,
)

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.loadgen import generate
from tidegate_devenv.operator_process import read_status, start_operator
from tidegate_devenv.paths import REPO
from tidegate_devenv.waiting import wait_until

BLUE_GREEN = REPO / "examples" / "blue-green"
AB_TESTING = REPO / "examples" / "ab-testing"


@pytest.fixture
def blue_green(start_shop: Callable[..., Shop]) -> Shop:
    """examples/blue-green applied as it is (each route then given a hostname of its own)."""
    return start_shop(example=BLUE_GREEN, as_is=True)


def blue_green_rollout(**strategy: Any) -> str:
    """The blue/green example's rollout with its strategy changed."""
    rollout = yaml.safe_load((BLUE_GREEN / "rollout.yaml").read_text())
    blue_green = rollout["spec"]["strategy"]["blueGreen"]
    blue_green.update(strategy)
    for name in [k for k, v in strategy.items() if v is None]:
        del blue_green[name]
    return yaml.safe_dump(rollout)


def versions(samples: list[tuple[float, str | None, int]]) -> Counter[tuple[str | None, int]]:
    return Counter((version, code) for _, version, code in samples)


def pods_running(kubectl: KubectlRunner, namespace: str, version: str) -> list[str]:
    """Pods (not being deleted) whose container runs `version` of the demo app."""
    names = []
    for pod in get(kubectl, namespace, "pods")["items"]:
        env = pod["spec"]["containers"][0].get("env", [])
        if {"name": "VERSION", "value": version} in env and not pod["metadata"].get(
            "deletionTimestamp"
        ):
            names.append(pod["metadata"]["name"])
    return names


def requests(
    environment: EnvironmentInfo, host: str, count: int, headers: dict[str, str] | None = None
) -> Counter[tuple[str | None, int]]:
    """Send `count` requests through the gateway; (version, code) of the answers."""
    result = asyncio.run(
        generate(environment.gateway_url, host=host, count=count, concurrency=8, headers=headers)
    )
    return Counter((version, code) for _, version, code in result.samples)


def requests_counted(environment: EnvironmentInfo, namespace: str, backend: str) -> float:
    """What Prometheus has of the gateway's request counter for one backend Service."""
    query = f'sum(gateway_requests_total{{namespace="{namespace}", backend="{backend}"}})'
    result = PrometheusConnect(environment.prometheus_url).custom_query(query)
    return float(result[0]["value"][1]) if result else 0.0


# --- blue/green -------------------------------------------------------------------------------


@contextlib.contextmanager
def previewed(shop: Shop) -> Iterator[tuple[RouteWatch, BackgroundLoad]]:
    """The live route watched, and load on the preview host, while the block runs."""
    watch = RouteWatch(shop.kubectl, shop.namespace, "shop")
    preview = BackgroundLoad(shop.environment.gateway_url, shop.host("shop-preview"), rps=30)
    try:
        yield watch, preview
    finally:
        preview.stop()
        watch.stop()


def test_blue_green_is_previewed_then_switched_in_one_write(blue_green: Shop) -> None:
    shop = blue_green
    with previewed(shop) as (watch, preview):
        started = time.monotonic()
        set_version(shop.kubectl, shop.namespace, "1.1.0")
        # Green answers on the preview host while every live request stays on blue.
        in_preview = shop.wait_status(
            lambda s: s.get("currentStepName") == "Preview" and s.get("previewActive") is True,
            "green in preview",
        )
        assert in_preview["canaryWeight"] == 0
        wait_until(lambda: preview.seen("1.1.0"), "green on the preview host", 30)
        green = shop.copy("canary")
        green_name = green["metadata"]["name"]
        assert green["spec"]["replicas"] == 1  # previewReplicaCount
        switched = shop.wait_status(lambda s: s.get("canaryWeight") == 100, "the switch", 120)
        assert switched["currentStepName"] == "Switched"
        switch_seen = wait_until(lambda: watch.first_seen(100), "the switch on the route", 10)
        # Up to the switch (less the time the gateway may have been ahead of this watch),
        # every live answer came from blue.
        live_before_switch = shop.load.samples_between(started, switch_seen - 0.5)
        assert len(live_before_switch) > 100
        assert {v for _, v, _ in live_before_switch if v} == {"1.0.0"}
        # Blue is still there, at full size, after the switch.
        blue = shop.copy("stable")
        blue_env = blue["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "VERSION", "value": "1.0.0"} in blue_env
        assert blue["status"].get("readyReplicas") == 2
        assert (
            get(shop.kubectl, shop.namespace, "deployment", green_name)["spec"]["replicas"] == 2
        )  # full size before any live traffic
        shop.wait_status(lambda s: s.get("currentStepName") == "ScalingDown", "scaling down")
        assert pods_running(shop.kubectl, shop.namespace, "1.0.0")  # blue kept up meanwhile
        status = shop.wait_phase("Succeeded", 120)
        ended = time.monotonic()

    # The live route went from blue to green in one write and back to the (now green)
    # stable Service in one more: never a split.
    assert watch.weights() == [0, 100, 0], watch.weights()
    # Nothing failed on the way, and the live traffic ended on green.
    live = shop.load.samples_between(started, ended)
    assert all(code == 200 for _, _, code in live), versions(live)
    recent = shop.traffic_after(ended, 90)
    assert {v for _, v, _ in recent} == {"1.1.0"}, versions(recent)
    # Blue is gone after the delay: no pod runs it any more.
    wait_until(
        lambda: pods_running(shop.kubectl, shop.namespace, "1.0.0"), "blue's pods gone", 60,
        until=lambda pods: pods == [],
    )  # fmt: skip
    # Green became stable as it was (one cutover): its copy is the only one left.
    wait_until(
        lambda: set(copies(shop.kubectl, shop.namespace)), "blue's copy removed", 60,
        until=lambda names: names == {green_name},
    )  # fmt: skip
    assert copy_of(status["stableRevision"]) == green_name
    assert status["previewActive"] is False
    preview_route = get(shop.kubectl, shop.namespace, "httproute", "shop-preview")
    assert [r["name"] for r in preview_route["spec"]["rules"][0]["backendRefs"]] == ["shop-stable"]


def test_blue_green_bad_green_never_takes_live_traffic(blue_green: Shop) -> None:
    shop = blue_green
    with previewed(shop) as (watch, preview):
        started = time.monotonic()
        set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
        status = shop.wait_phase("Failed", 120)
        ended = time.monotonic()
        assert preview.seen("1.2.0")  # it was previewed, and failed there
    assert "error-rate" in str(status["message"])
    assert status["currentStepIndex"] == 0 and status.get("currentStepName") == "Preview"
    assert set(watch.weights()) == {0}
    live = shop.load.samples_between(started, ended)
    assert {v for _, v, _ in live if v} == {"1.0.0"}, versions(live)
    wait_replicas(shop.kubectl, shop.namespace, copy_of(status["canaryRevision"]), 0)


def test_blue_green_failing_after_the_switch_switches_back(start_shop: Callable[..., Shop]) -> None:
    rollout = blue_green_rollout(prePromotionAnalysis=None)
    shop = start_shop(rollout, example=BLUE_GREEN)
    kubectl, namespace = shop.kubectl, shop.namespace
    watch = RouteWatch(kubectl, namespace, "shop")
    try:
        set_version(kubectl, namespace, "1.2.0", error_rate=0.5)
        shop.wait_status(lambda s: s.get("canaryWeight") == 100, "the switch", 120)
        status = shop.wait_phase("Failed", 60)
        back = time.monotonic()
    finally:
        watch.stop()
    # One measurement after the switch (failureLimit 1) took it back to blue, which
    # was still up: no second interval went by on green.
    assert status["failedChecks"] == 1 and status["passedChecks"] == 0, status
    assert status["currentStepName"] == "Switched"
    assert watch.weights() == [0, 100, 0], watch.weights()
    shop.caught_up()  # the gateway has applied the switch back
    after = shop.traffic_after(time.monotonic(), 300)
    assert time.monotonic() - back < 60
    on_blue = sum(1 for _, v, code in after if v == "1.0.0" and code == 200)
    assert on_blue / len(after) >= 0.99, versions(after)


def test_blue_green_without_auto_promotion_waits_in_preview(
    start_shop: Callable[..., Shop],
) -> None:
    rollout = blue_green_rollout(autoPromotionEnabled=False, prePromotionAnalysis=None)
    shop = start_shop(rollout, example=BLUE_GREEN)
    kubectl, namespace = shop.kubectl, shop.namespace
    set_version(kubectl, namespace, "1.1.0")
    waiting = shop.wait_phase("Paused", 60)
    assert waiting["currentStepName"] == "Preview"
    assert "paused until promoted" in str(waiting["message"])
    shop.caught_up()  # (and has written the routes' status for what it applied)
    # Woken twice with nothing to do: it looks, and changes nothing (no switch).
    held = resource_versions(kubectl, namespace, "progressiverollout,httproute")
    reconciles = shop.operator.reconciles()
    for poke in (1, 2):
        kubectl.check(
            "annotate", "--overwrite", "-n", namespace, "deployment/shop",
            f"e2e.tidegate.io/poke={poke}",
        )  # fmt: skip
        wait_until(
            shop.operator.reconciles, f"reconcile {poke}", 30,
            until=lambda count, poke=poke: count >= reconciles + poke,  # type: ignore[misc]
        )  # fmt: skip
    assert resource_versions(kubectl, namespace, "progressiverollout,httproute") == held
    assert shop.weight() == 0
    shop.promote()
    shop.wait_phase("Succeeded", 120)
    shop.caught_up()  # the gateway has applied the switch
    recent = shop.traffic_after(time.monotonic(), 60)
    assert recent[-1][1] == "1.1.0"
    annotations = get(kubectl, namespace, "pro", "shop")["metadata"].get("annotations", {})
    assert "tidegate.io/promote" not in annotations


# --- A/B testing and mirroring ----------------------------------------------------------------


def test_header_route_then_mirror_then_weights(start_shop: Callable[..., Shop]) -> None:
    shop = start_shop(example=AB_TESTING, as_is=True)
    environment, kubectl, namespace = shop.environment, shop.kubectl, shop.namespace
    host = shop.host()
    set_version(kubectl, namespace, "1.1.0")
    paused = shop.wait_phase("Paused", 60)
    assert paused["currentStepIndex"] == 1 and paused["headerRoute"]
    # With the header: the canary answers. Without it: the weights, 0% to the canary.
    with_header = requests(environment, host, 500, {"X-Canary": "always"})
    assert with_header[("1.1.0", 200)] >= 495, with_header
    without = requests(environment, host, 500)
    assert without == Counter({("1.0.0", 200): 500}), without

    # Promoted by hand: copies of half the requests reach the canary, the clients still
    # get the stable version's answers only.
    canary_before = requests_counted(environment, namespace, "shop-canary")
    shop.promote()
    mirroring = shop.wait_status(
        lambda s: s.get("mirrorPercent") == 50 and s.get("currentStepIndex", 0) >= 3,
        "mirroring, analysed",
    )
    assert mirroring["canaryWeight"] == 0
    mirrored_from = time.monotonic()
    wait_until(
        lambda: requests_counted(environment, namespace, "shop-canary"),
        "the canary's request counter to rise", 30,
        until=lambda count: count > canary_before + 20,
    )  # fmt: skip
    seen = shop.traffic_after(mirrored_from, 120)
    assert {v for _, v, _ in seen} == {"1.0.0"}, versions(seen)

    status = shop.wait_phase("Succeeded", 120)
    assert "headerRoute" not in status and status["mirrorPercent"] == 0
    rules = get(kubectl, namespace, "httproute", "shop")["spec"]["rules"]
    assert len(rules) == 1  # the header rule is gone
    assert not [f for f in rules[0].get("filters", []) if f["type"] == "RequestMirror"]
    # The gateway applies the end of the rollout, and the stable pods' change, a moment
    # after the status says Succeeded: until then some requests still reach the old pods.
    wait_until(
        lambda: requests(environment, host, 50, {"X-Canary": "always"}),
        "every request on the promoted version", 30,
        until=lambda seen: seen == Counter({("1.1.0", 200): 50}),
    )  # fmt: skip
    assert requests(environment, host, 200, {"X-Canary": "always"}) == Counter(
        {("1.1.0", 200): 200}
    )


# --- specs refused ----------------------------------------------------------------------------


@pytest.mark.usefixtures("rollout_crd")
def test_both_strategies_are_refused_naming_the_field(
    kubectl: KubectlRunner, namespace: str
) -> None:
    rollout = yaml.safe_load((BLUE_GREEN / "rollout.yaml").read_text())
    rollout["spec"]["strategy"]["canary"] = {"steps": [{"setWeight": 10}]}
    result = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(rollout))
    assert result.returncode != 0
    assert "spec.strategy" in result.stderr
    assert "set exactly one of canary or blueGreen" in result.stderr, result.stderr


SERVICE_ROUTED = """
apiVersion: tidegate.io/v1alpha1
kind: ProgressiveRollout
metadata:
  name: shop
spec:
  targetRef: {name: shop}
  service: {name: shop, port: 80}
  trafficRouting: {service: {}}
  strategy: {STRATEGY}
"""


@pytest.mark.usefixtures("rollout_crd")
def test_a_mirror_step_on_a_router_that_cannot_mirror_is_refused_naming_it(
    environment: EnvironmentInfo, kubectl: KubectlRunner, namespace: str, tmp_path: Path
) -> None:
    strategy = "{canary: {steps: [{setWeight: 10}, {setMirrorRoute: {percentage: 20}}]}}"
    kubectl.check("apply", "-n", namespace, "-f", str(AB_TESTING / "app.yaml"))
    kubectl.check(
        "apply", "-n", namespace, "-f", "-", stdin=SERVICE_ROUTED.replace("{STRATEGY}", strategy)
    )
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        status = wait_until(
            lambda: read_status(kubectl, namespace, "shop"), "the spec refused", 30,
            until=lambda s: any(c.get("reason") == "InvalidSpec" for c in s.get("conditions", [])),
        )  # fmt: skip
    finally:
        operator.stop()
    message = next(c["message"] for c in status["conditions"] if c["reason"] == "InvalidSpec")
    assert "spec.strategy.canary.steps[1].setMirrorRoute" in message, message
    assert "cannot carry 'mirror'" in message
    refused = [e for e in events(kubectl, namespace) if e["reason"] == "InvalidSpec"]
    assert refused and refused[0]["type"] == "Warning"
    # Nothing was acted on: no copies, the user's Service untouched.
    assert [d["metadata"]["name"] for d in get(kubectl, namespace, "deployments")["items"]] == [
        "shop"
    ]
    assert get(kubectl, namespace, "service", "shop")["spec"]["selector"] == {"app": "shop"}


def test_blue_green_through_a_service_selector(start_shop: Callable[..., Shop]) -> None:
    rollout = SERVICE_ROUTED.replace("{STRATEGY}", "{blueGreen: {scaleDownDelaySeconds: 2}}")
    shop = start_shop(rollout)
    kubectl, namespace = shop.kubectl, shop.namespace
    assert get(kubectl, namespace, "service", "shop")["spec"]["selector"] == {
        "app": "shop",
        "tidegate.io/revision": shop.status()["stableRevision"],
    }
    started = time.monotonic()
    set_version(kubectl, namespace, "1.1.0")
    green = shop.wait_status(lambda s: s.get("canaryWeight") == 100, "the switch", 90)
    switched = get(kubectl, namespace, "service", "shop")["spec"]["selector"]
    assert switched["tidegate.io/revision"] == green["canaryRevision"]
    shop.wait_phase("Succeeded", 90)
    ended = time.monotonic()
    live = shop.load.samples_between(started, ended)
    assert all(code == 200 for _, _, code in live), versions(live)
    recent = shop.traffic_after(ended, 90)
    assert {v for _, v, _ in recent} == {"1.1.0"}, versions(recent)
    assert get(kubectl, namespace, "service", "shop")["spec"]["selector"] == {
        "app": "shop",
        "tidegate.io/revision": green["canaryRevision"],
    }
