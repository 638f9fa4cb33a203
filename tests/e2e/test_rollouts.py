"""Canary rollouts end to end: the operator, the real API server, Prometheus and gateway."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_support import (
    HOST,
    BackgroundLoad,
    Operator,
    canary_weight_in_route,
    events,
    get,
    set_version,
    unique_host,
    wait_for,
)

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import install_crd, read_status
from tidegate_devenv.paths import CANARY_EXAMPLE


@pytest.fixture(scope="session")
def rollout_crd(kubectl: KubectlRunner) -> None:
    install_crd(kubectl)


@dataclass
class Shop:
    """The example application, its ProgressiveRollout, an operator and steady load."""

    namespace: str
    kubectl: KubectlRunner
    operator: Operator
    load: BackgroundLoad

    def status(self) -> dict[str, Any]:
        return read_status(self.kubectl, self.namespace, "shop")

    def phase(self) -> object:
        return self.status().get("phase")

    def weight(self) -> int:
        return canary_weight_in_route(self.kubectl, self.namespace)

    def wait_status(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 90
    ) -> dict[str, Any]:
        """The first status that passes `check`; a timeout names the last one seen."""
        seen: list[dict[str, Any]] = [{}]

        def passes() -> dict[str, Any] | None:
            seen[0] = self.status()
            return seen[0] if check(seen[0]) else None

        try:
            return wait_for(passes, what, timeout)  # type: ignore[no-any-return]
        except AssertionError as error:
            raise AssertionError(f"{error}; status: {seen[0]}") from None

    def wait_phase(self, phase: str, timeout: float = 90) -> dict[str, Any]:
        return self.wait_status(lambda s: s.get("phase") == phase, f"phase {phase}", timeout)


@contextlib.contextmanager
def running_shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    tmp_path: Path,
    rollout: str | None = None,
    *,
    as_is: bool = False,
) -> Iterator[Shop]:
    """The example in `namespace`: as it is, or with a hostname of its own (and `rollout`),
    initialised, with its operator and load running until the block ends."""
    if as_is:
        host = HOST
        kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE))
    else:
        host = unique_host(namespace)
        app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
        for obj in app:
            if obj["kind"] == "HTTPRoute":
                obj["spec"]["hostnames"] = [host]
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))
        rollout = rollout or (CANARY_EXAMPLE / "rollout.yaml").read_text()
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=rollout)
    operator = Operator(environment, namespace, tmp_path / "operator.log")
    operator.start()
    shop = Shop(namespace, kubectl, operator, BackgroundLoad(environment.gateway_url, host))
    try:
        shop.wait_phase("Initialized", 60)
        wait_for(lambda: shop.load.seen("1.0.0"), "traffic on 1.0.0", 30)
        yield shop
    finally:
        shop.load.stop()
        operator.stop()


@pytest.fixture
def shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> Iterator[Shop]:
    with running_shop(environment, kubectl, namespace, tmp_path) as started:
        yield started


@pytest.fixture
def example_shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> Iterator[Shop]:
    """examples/canary applied exactly as a user would apply it."""
    with running_shop(environment, kubectl, namespace, tmp_path, as_is=True) as started:
        yield started


def record_weights_until(
    shop: Shop, phases: set[str], timeout: float = 120
) -> list[tuple[float, int]]:
    """Poll the HTTPRoute's canary weight until the rollout reaches one of `phases`."""
    timeline: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        weight = shop.weight()
        if not timeline or timeline[-1][1] != weight:
            timeline.append((time.monotonic(), weight))
        if shop.phase() in phases:
            timeline.append((time.monotonic(), shop.weight()))
            return timeline
        time.sleep(0.1)
    raise AssertionError(f"rollout never reached {phases}: {shop.status()}")


def test_healthy_version_is_promoted_and_traffic_follows_each_step(example_shop: Shop) -> None:
    shop = example_shop
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    timeline = record_weights_until(shop, {"Succeeded", "Failed"})
    status = shop.status()
    assert status["phase"] == "Succeeded", status

    weights = [w for _, w in timeline]
    assert [w for w in weights if w] == [10, 30, 60], timeline
    assert weights[-1] == 0
    # What the load generator really saw while each weight held.
    for (start, weight), (end, _) in itertools.pairwise(timeline):
        if weight == 0 or end - start < 2:
            continue
        samples = shop.load.samples_between(start + 0.3, end)
        canary = sum(1 for _, version, _ in samples if version == "1.1.0")
        assert len(samples) > 80
        assert abs(canary / len(samples) - weight / 100) <= 0.1, (weight, canary, len(samples))

    # Promoted: the stable copy runs the new template and serves everything.
    time.sleep(2)
    recent = shop.load.samples_between(time.monotonic() - 1.5, time.monotonic())
    assert recent and all(version == "1.1.0" and code == 200 for _, version, code in recent)
    deployments = {
        d["metadata"]["name"]: d for d in get(shop.kubectl, shop.namespace, "deployments")["items"]
    }
    assert deployments["shop-canary"]["spec"]["replicas"] == 0
    assert deployments["shop"]["spec"]["replicas"] == 0
    stable_env = deployments["shop-stable"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VERSION", "value": "1.1.0"} in stable_env
    assert status["stableRevision"] and "canaryRevision" not in status
    conditions = {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]
    assert conditions == {"Ready": "True", "Progressing": "False", "Degraded": "False"}
    shop.kubectl.check(
        "wait",
        "-n",
        shop.namespace,
        "--for=condition=Ready",
        "progressiverollout/shop",
        "--timeout=5s",
    )
    assert {e["reason"] for e in events(shop.kubectl, shop.namespace)} >= {
        "RolloutStarted",
        "Promoted",
    }

    # Not progressing: the operator keeps reading but writes nothing.
    def versions() -> dict[str, str]:
        kinds = "progressiverollout,httproute,deployment,service"
        items = get(shop.kubectl, shop.namespace, kinds)["items"]
        return {
            f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items
        }

    before = versions()
    shop.kubectl.check("annotate", "-n", shop.namespace, "deployment/shop", "poke=1")  # wakes it
    time.sleep(5)
    after = versions()
    after.pop("Deployment/shop")
    before.pop("Deployment/shop")
    assert after == before


def test_failing_version_is_rolled_back(shop: Shop) -> None:
    set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
    timeline = record_weights_until(shop, {"Failed", "Succeeded"})
    status = shop.status()
    assert status["phase"] == "Failed", status
    assert max(w for _, w in timeline) == 10
    assert timeline[-1][1] == 0
    message = str(status["message"])
    assert 'metric "error-rate"' in message and "outside [-inf, 0.05]" in message, message
    assert status["canaryWeight"] == 0
    conditions = {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined]
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    rolled_back = [e for e in events(shop.kubectl, shop.namespace) if e["reason"] == "RolledBack"]
    assert rolled_back and rolled_back[0]["type"] == "Warning"
    assert 'metric "error-rate"' in rolled_back[0]["message"]

    canary = get(shop.kubectl, shop.namespace, "deployment", "shop-canary")
    assert canary["spec"]["replicas"] == 0
    time.sleep(1.5)
    start = time.monotonic()
    time.sleep(4)
    after = shop.load.samples_between(start, time.monotonic())
    on_stable = sum(1 for _, version, code in after if version == "1.0.0" and code == 200)
    assert len(after) > 100
    assert on_stable / len(after) >= 0.99


def test_new_revision_mid_rollout_restarts_it(shop: Shop) -> None:
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    first = shop.wait_status(
        lambda s: s.get("currentStepIndex", 0) >= 1, "step 2 of the first revision"
    )
    set_version(shop.kubectl, shop.namespace, "1.3.0")
    restarted = shop.wait_status(
        lambda s: s.get("canaryRevision") not in (None, first["canaryRevision"]),
        "a rollout of the newer revision",
    )
    assert restarted["currentStepIndex"] == 0
    assert restarted["canaryWeight"] <= 10
    timeline = record_weights_until(shop, {"Succeeded", "Failed"})
    assert shop.phase() == "Succeeded"
    assert [w for _, w in timeline if w][:1] == [10]
    assert shop.status()["stableRevision"] == restarted["canaryRevision"]
    assert "RolloutRestarted" in {e["reason"] for e in events(shop.kubectl, shop.namespace)}
    time.sleep(2)
    recent = shop.load.samples_between(time.monotonic() - 1.5, time.monotonic())
    assert recent and {version for _, version, _ in recent} == {"1.3.0"}


def test_killed_operator_is_resumed_by_a_new_one(shop: Shop) -> None:
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    at_step = shop.wait_status(lambda s: s.get("currentStepIndex") == 1, "the second step")
    assert shop.operator.process is not None
    shop.operator.process.kill()
    shop.operator.process.wait()

    # Nobody is there: the traffic split and the status stay exactly where they were.
    weights = set()
    for _ in range(20):
        weights.add(shop.weight())
        time.sleep(0.1)
    assert weights == {at_step["canaryWeight"]} == {30}
    assert shop.status()["currentStepIndex"] == 1

    shop.operator.start()
    timeline = record_weights_until(shop, {"Succeeded", "Failed"})
    assert shop.phase() == "Succeeded"
    weights_after = [w for _, w in timeline]
    assert weights_after[-1] == 0
    # It went on from the second step: no step back, no restart from the first.
    going_on = [w for w in weights_after if w]
    assert going_on == sorted(going_on) and min(going_on) >= 30, weights_after


def test_route_edited_behind_its_back_is_restored(shop: Shop) -> None:
    route = get(shop.kubectl, shop.namespace, "httproute", "shop")
    refs = route["spec"]["rules"][0]["backendRefs"]
    for ref in refs:
        ref["weight"] = 50
    patch = json.dumps({"spec": {"rules": [{**route["spec"]["rules"][0], "backendRefs": refs}]}})
    patched = shop.kubectl.check(
        "patch", "-n", shop.namespace, "httproute/shop", "--type=merge", "-p", patch, "-o", "json"
    )
    assert '"weight": 50' in patched  # (the operator may put it back before we can look again)
    shop.kubectl.check("annotate", "-n", shop.namespace, "deployment/shop", "poke=1")  # a wake-up
    wait_for(lambda: shop.weight() == 0, "the weights tidegate owns back in place", 15)
    assert shop.phase() == "Initialized"


NO_DATA_ROLLOUT = """
apiVersion: tidegate.io/v1alpha1
kind: ProgressiveRollout
metadata:
  name: shop
spec:
  targetRef: {name: shop}
  service: {name: shop, port: 80}
  trafficRouting: {gatewayAPI: {httpRoute: shop}}
  strategy: {canary: {stepWeight: 20, maxWeight: 60}}
  analysis:
    interval: 2s
    failureLimit: 4
    metrics:
      - name: requests-that-never-happen
        query: sum(rate(no_such_metric_total{namespace="{{ namespace }}"}[{{ window }}]))
        thresholdRange: {max: 1000}
"""


def test_query_returning_no_data_never_promotes(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    with running_shop(environment, kubectl, namespace, tmp_path, NO_DATA_ROLLOUT) as shop:
        set_version(kubectl, namespace, "1.1.0")
        timeline = record_weights_until(shop, {"Failed", "Succeeded", "Promoting"}, timeout=60)
        status = shop.status()
        assert status["phase"] == "Failed", status
        assert {w for _, w in timeline} <= {0, 20}
        assert status["metrics"] == [  # type: ignore[comparison-overlap]
            {**status["metrics"][0], "phase": "NoData"}  # type: ignore[index]
        ]
        assert "no data" in str(status["message"])
        assert status["failedChecks"] == 4
        time.sleep(1.5)  # requests already in flight, and the gateway's watch, settle
        recent = shop.load.samples_between(time.monotonic() - 1.5, time.monotonic())
        assert recent and {version for _, version, _ in recent} == {"1.0.0"}


BAD_SPECS = {
    "weights going down": (
        {"strategy": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}},
        "setWeight values must not decrease",
    ),
    "min above max": (
        {
            "analysis": {
                "metrics": [{"name": "m", "query": "up", "thresholdRange": {"min": 5, "max": 1}}]
            }
        },
        "thresholdRange.min must not be greater than thresholdRange.max",
    ),
    "weight over 100": (
        {"strategy": {"canary": {"steps": [{"setWeight": 150}]}}},
        "should be less than or equal to 100",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_refused_by_kubectl_apply(
    kubectl: KubectlRunner, namespace: str, rollout_crd: None, case: str
) -> None:
    change, expected = BAD_SPECS[case]
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"].update(change)
    result = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(rollout))
    assert result.returncode != 0
    assert 'The ProgressiveRollout "shop" is invalid' in result.stderr
    assert expected in result.stderr, result.stderr


def test_missing_target_and_route_are_reported_then_picked_up(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    operator = Operator(environment, namespace, tmp_path / "operator.log")
    operator.start()
    try:
        kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))

        def degraded(reason: str) -> dict[str, Any] | None:
            status = read_status(kubectl, namespace, "shop")
            found = [c for c in status.get("conditions", []) if c["type"] == "Degraded"]
            return found[0] if found and found[0]["reason"] == reason else None

        condition = wait_for(lambda: degraded("TargetNotFound"), "TargetNotFound", 30)
        assert condition["status"] == "True"
        assert "target Deployment" in condition["message"]
        assert "does not exist" in condition["message"]

        app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
        without_route = [o for o in app if o["kind"] != "HTTPRoute"]
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(without_route))
        condition = wait_for(lambda: degraded("RoutingFailed"), "RoutingFailed", 60)
        assert "HTTPRoute" in condition["message"] and "does not exist" in condition["message"]
        reasons = {e["reason"] for e in events(kubectl, namespace) if e["type"] == "Warning"}
        assert reasons >= {"TargetNotFound", "RoutingFailed"}

        route = [o for o in app if o["kind"] == "HTTPRoute"]
        kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(route))

        def picked_up() -> bool:
            refs = get(kubectl, namespace, "httproute", "shop")["spec"]["rules"][0]["backendRefs"]
            status = read_status(kubectl, namespace, "shop")
            ready = {c["type"]: c["status"] for c in status.get("conditions", [])}
            return [r["name"] for r in refs] == ["shop-stable", "shop-canary"] and ready == {
                "Ready": "True",
                "Progressing": "False",
                "Degraded": "False",
            }

        wait_for(picked_up, "the rollout to take the route over and be Ready", 60)
        assert read_status(kubectl, namespace, "shop")["phase"] == "Initialized"
        assert get(kubectl, namespace, "deployment", "shop")["spec"]["replicas"] == 0
    finally:
        operator.stop()
