"""Metric templates end to end: examples/metric-templates (a ClusterMetricTemplate with the
canary example's error-rate query, a MetricTemplate for latency, and the canary example's
rollout using both) against the real API server, Prometheus and gateway."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from rollout_support import Shop, events, set_version, weights_until

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.paths import REPO
from tidegate_devenv.waiting import wait_until

EXAMPLE = REPO / "examples" / "metric-templates"
TEMPLATES = EXAMPLE / "templates.yaml"
ROLLOUT = (EXAMPLE / "rollout.yaml").read_text()


@pytest.fixture
def templates(kubectl: KubectlRunner, namespace: str, rollout_crd: None) -> Iterator[None]:
    """The example's templates: the MetricTemplate in the test's namespace (it goes with
    it), the ClusterMetricTemplate once for the cluster (the same for every test)."""
    kubectl.check("apply", "-n", namespace, "-f", str(TEMPLATES))
    yield


def test_a_healthy_version_is_promoted_through_the_templates(
    templates: None, start_shop: Callable[..., Shop]
) -> None:
    shop = start_shop(ROLLOUT)
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    weights = weights_until(shop, {"Succeeded", "Failed"})
    status = shop.status()
    assert status["phase"] == "Succeeded", status
    assert [w for w in weights if w] == [10, 30, 60], weights
    # Both metrics were measured through their templates, and passed.
    metrics = {m["name"]: m for m in status["metrics"]}  # type: ignore[attr-defined]
    assert set(metrics) == {"error-rate", "latency-p99"}
    assert {m["phase"] for m in metrics.values()} == {"Passed"}
    # The bounds: the ClusterMetricTemplate's own, and the metric's in place of the
    # MetricTemplate's.
    assert "within [-inf, 0.05]" in metrics["error-rate"]["message"]
    assert "within [-inf, 0.5]" in metrics["latency-p99"]["message"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]
    assert conditions["Degraded"] == "False"
    shop.caught_up()  # the gateway has applied the end of the rollout
    recent = shop.traffic_after(time.monotonic(), 60)
    assert {version for _, version, _ in recent} == {"1.1.0"}


def test_a_failing_version_is_rolled_back_through_the_template(
    templates: None, start_shop: Callable[..., Shop]
) -> None:
    shop = start_shop(ROLLOUT)
    set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
    weights = weights_until(shop, {"Failed", "Succeeded"})
    status = shop.status()
    assert status["phase"] == "Failed", status
    assert max(weights) == 10 and shop.weight() == 0
    message = str(status["message"])
    assert 'metric "error-rate"' in message and "outside [-inf, 0.05]" in message, message
    rolled_back = [e for e in events(shop.kubectl, shop.namespace) if e["reason"] == "RolledBack"]
    assert rolled_back and 'metric "error-rate"' in rolled_back[0]["message"]
    shop.caught_up()  # the gateway has applied the rollback
    after = shop.traffic_after(time.monotonic(), 120)
    on_stable = sum(1 for _, version, code in after if version == "1.0.0" and code == 200)
    assert on_stable / len(after) >= 0.99, Counter((version, code) for _, version, code in after)


def _naming_template(rollout: dict[str, Any], template: str) -> str:
    """The rollout, every metric of it naming `template`."""
    for metric in rollout["spec"]["analysis"]["metrics"]:
        metric["templateRef"]["name"] = template
    return yaml.safe_dump(rollout)


def test_a_missing_template_is_reported_and_nothing_is_promoted(
    templates: None, start_shop: Callable[..., Shop]
) -> None:
    missing = f"no-such-template-{int(time.time() * 1000)}"
    rollout = yaml.safe_load(ROLLOUT)
    rollout["spec"]["analysis"]["metrics"] = rollout["spec"]["analysis"]["metrics"][:1]
    shop = start_shop(_naming_template(rollout, missing))
    kubectl, namespace = shop.kubectl, shop.namespace
    set_version(kubectl, namespace, "1.1.0")

    def degraded() -> dict[str, Any] | None:
        conditions = shop.status().get("conditions") or []
        found = [c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"]
        return found[0] if found else None

    condition = wait_until(degraded, "Degraded", 60)
    assert condition["reason"] == "TemplateNotFound"
    assert f"ClusterMetricTemplate {missing} does not exist" in condition["message"]
    assert 'metric "error-rate"' in condition["message"]
    # Never a measurement, never a pass: the first analysis waits, at the first weight.
    status = shop.status()
    assert status["phase"] == "Progressing" and not status.get("metrics"), status
    assert shop.weight() <= 10
    warnings = [e for e in events(kubectl, namespace) if e["reason"] == "TemplateNotFound"]
    assert len(warnings) == 1 and missing in warnings[0]["message"]
    # Still held a few analysis intervals on, with no second Event for the same problem.
    reconciles = shop.operator.reconciles()
    wait_until(
        shop.operator.reconciles, "three more reconciles", 60,
        until=lambda count: count >= reconciles + 3,
    )  # fmt: skip
    assert shop.status()["phase"] == "Progressing" and shop.weight() <= 10
    assert len([e for e in events(kubectl, namespace) if e["reason"] == "TemplateNotFound"]) == 1

    # The template appears: its watch wakes the rollout, which goes on to promotion.
    documents = yaml.safe_load_all(TEMPLATES.read_text())
    cluster = next(d for d in documents if d["kind"] == "ClusterMetricTemplate")
    cluster["metadata"]["name"] = missing
    kubectl.check("apply", "-f", "-", stdin=yaml.safe_dump(cluster))
    try:
        shop.wait_phase("Succeeded", 120)
        assert degraded() is None
    finally:
        kubectl.run("delete", "clustermetrictemplate", missing, "--ignore-not-found")


REFUSED = {
    "query and templateRef": (
        "ProgressiveRollout",
        {"name": "m", "query": "up", "templateRef": {"name": "t"}, "thresholdRange": {"max": 1}},
        "set exactly one of query or templateRef",
    ),
    "a query without bounds": ("ProgressiveRollout", {"name": "m", "query": "up"},
                               "a metric with a query needs a thresholdRange"),
    "args without templateRef": (
        "ProgressiveRollout",
        {"name": "m", "query": "up", "thresholdRange": {"max": 1},
         "args": [{"name": "a", "value": "b"}]},
        "args need a templateRef",
    ),
    "a template's bounds the wrong way round": (
        "MetricTemplate", {"query": "up", "thresholdRange": {"min": 2, "max": 1}},
        "thresholdRange.min must not be greater than thresholdRange.max",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_api_server_refuses_what_the_models_refuse(
    kubectl: KubectlRunner, namespace: str, templates: None, case: str
) -> None:
    kind, body, expected = REFUSED[case]
    if kind == "ProgressiveRollout":
        obj = yaml.safe_load(ROLLOUT)
        obj["spec"]["analysis"]["metrics"] = [body]
    else:
        obj = {"apiVersion": "tidegate.io/v1alpha1", "kind": kind,
               "metadata": {"name": "bad"}, "spec": body}  # fmt: skip
    result = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(obj))
    assert result.returncode != 0
    assert f'The {kind} "' in result.stderr and expected in result.stderr, result.stderr
