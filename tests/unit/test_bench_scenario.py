"""The side-by-side benchmark's scenario: one description, the same work for each controller."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import scenario
from scenario import ARGO, CONTROLLERS, FLAGGER, SCENARIO, TIDEGATE, objects

from tidegate.api import ProgressiveRollout

PROMETHEUS = "http://127.0.0.1:9090"


def by_kind(controller: str, **kwargs: bool) -> dict[str, dict]:  # type: ignore[type-arg]
    return {o["kind"]: o for o in objects(controller, SCENARIO, "ns", PROMETHEUS, **kwargs)}


def test_tidegate_rollout_is_valid_for_the_operator() -> None:
    rollout = ProgressiveRollout.model_validate(by_kind(TIDEGATE)["ProgressiveRollout"])
    assert rollout.spec.analysis is not None


def test_same_steps_interval_and_failure_rule_everywhere() -> None:
    tg = by_kind(TIDEGATE)["ProgressiveRollout"]["spec"]
    fl = by_kind(FLAGGER)["Canary"]["spec"]["analysis"]
    ar_rollout = by_kind(ARGO)["Rollout"]["spec"]
    ar_metric = by_kind(ARGO)["AnalysisTemplate"]["spec"]["metrics"][0]
    assert [s["setWeight"] for s in tg["strategy"]["canary"]["steps"]] == [20, 50]
    assert fl["stepWeights"] == [20, 50]
    argo_steps = ar_rollout["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in argo_steps if "setWeight" in s] == [20, 50]
    assert [s["pause"]["duration"] for s in argo_steps if "pause" in s] == ["10s", "10s"]
    assert tg["analysis"]["interval"] == fl["interval"] == ar_metric["interval"] == "10s"
    # Each controller's own words for "fail at the first failing measurement".
    assert tg["analysis"]["failureLimit"] == 1
    assert fl["threshold"] == 1
    assert ar_metric["failureLimit"] == 0
    assert tg["analysis"]["metrics"][0]["thresholdRange"] == {"max": 0.05}
    assert fl["metrics"][0]["thresholdRange"] == {"max": 0.05}
    assert ar_metric["successCondition"] == "result[0] <= 0.05"


def queries() -> dict[str, str]:
    return {
        TIDEGATE: by_kind(TIDEGATE)["ProgressiveRollout"]["spec"]["analysis"]["metrics"][0][
            "query"
        ],
        FLAGGER: by_kind(FLAGGER)["MetricTemplate"]["spec"]["query"],
        ARGO: by_kind(ARGO)["AnalysisTemplate"]["spec"]["metrics"][0]["provider"]["prometheus"][
            "query"
        ],
    }


def test_one_query_shape_with_each_controllers_own_variables() -> None:
    qs = queries()
    # Each is the scenario's one query with the controller's own metric and selector.
    for q in qs.values():
        metric, _, rest = q.partition("{")
        metric = metric.rpartition("(")[2]
        selector = rest.partition(', code=~"5.."')[0]
        assert q == scenario.error_rate_query(metric, selector, "10s")
    assert "{{ canaryService }}" in qs[TIDEGATE]
    # Flagger's template functions: namespace, target, interval, ...
    assert set(re.findall(r"\{\{ (\w+) \}\}", qs[FLAGGER])) == {"namespace", "target"}
    assert set(re.findall(r"\{\{ args\.([\w-]+) \}\}", qs[ARGO])) == {"namespace", "canary-hash"}
    argo_args = by_kind(ARGO)["AnalysisTemplate"]["spec"]["args"]
    assert [a["name"] for a in argo_args] == ["namespace", "canary-hash"]


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_same_app_and_load_target(controller: str) -> None:
    kinds = by_kind(controller)
    workload = kinds.get("Deployment") or kinds["Rollout"]
    assert workload["spec"]["replicas"] == 5
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert containers[0]["env"][0] == {"name": "VERSION", "value": "1.0.0"}
    if controller != FLAGGER:  # Flagger writes its own HTTPRoute from spec.service.hosts
        assert kinds["HTTPRoute"]["spec"]["hostnames"] == ["shop.ns.example.com"]
    else:
        assert kinds["Canary"]["spec"]["service"]["hosts"] == ["shop.ns.example.com"]


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_fleet_variant_needs_no_traffic(controller: str) -> None:
    text = str(objects(controller, SCENARIO, "ns", PROMETHEUS, fleet=True))
    assert "vector(0)" in text and "gateway_requests_total" not in text


def test_change_patch_replaces_the_env() -> None:
    patch = scenario.change_patch("1.2.0", 0.5)
    assert patch[0]["path"] == "/spec/template/spec/containers/0/env"
    assert {"name": "ERROR_RATE", "value": "0.5"} in patch[0]["value"]


def test_every_controller_has_its_differences_said() -> None:
    assert all(scenario.DIFFERENCES[c] for c in CONTROLLERS)
