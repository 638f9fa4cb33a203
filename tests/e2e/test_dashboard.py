"""The operator's metrics during real rollouts, and every Grafana panel's query answered by
the environment's real Prometheus, which scrapes the operator as a ServiceMonitor would."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rollout_support import Shop, set_version

from tidegate_devenv.paths import REPO
from tidegate_devenv.waiting import wait_until

DASHBOARD = REPO / "deploy" / "grafana" / "tidegate.json"
# What Grafana would put in for $__rate_interval here: a window that still covers the
# rollouts this test just ran.
RATE_INTERVAL = "3m"


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


def sample(shop: Shop, sample_name: str, /, **labels: str) -> float | None:
    for family in text_string_to_metric_families(shop.operator.metrics_text()):
        for s in family.samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def wait_counted(shop: Shop, result: str) -> None:
    """The operator counts an ending once the API server has answered the status write that
    made it, a moment after a reader can see the new phase: waited for, then the rest holds."""
    mine = {"namespace": shop.namespace, "name": "shop"}
    wait_until(
        lambda: sample(shop, "tidegate_rollouts_total", **mine, result=result) is not None,
        f"the operator counting the rollout {result}",
        30,
    )


def test_metrics_follow_the_rollouts_and_every_panel_has_data(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop()
    prometheus = shop.environment.prometheus_url
    identity = shop.operator.identity
    wait_until(
        lambda: has_data(query(prometheus, f'up{{job="tidegate", identity="{identity}"}} == 1')),
        "Prometheus scraping the operator",
        60,
    )
    mine = {"namespace": shop.namespace, "name": "shop"}

    # A failing version: rolled back.
    set_version(shop.kubectl, shop.namespace, "1.1.0", error_rate=0.5)
    shop.wait_phase("Failed", 120)
    wait_counted(shop, "failed")
    assert sample(shop, "tidegate_rollouts_total", **mine, result="failed") == 1
    failed_checks = sample(
        shop, "tidegate_analysis_measurements_total", **mine, metric="error-rate", result="failed"
    )
    assert failed_checks is not None and failed_checks >= 2  # the example's failureLimit
    assert sample(shop, "tidegate_rollout_canary_weight", **mine) == 0
    assert sample(shop, "tidegate_rollout_info", **mine, strategy="canary", phase="Failed") == 1

    # A healthy one: the gauges say what the status says while it progresses.
    set_version(shop.kubectl, shop.namespace, "1.2.0")

    def at_second_step() -> bool:
        status = shop.status()
        weight = sample(shop, "tidegate_rollout_canary_weight", **mine)
        step = sample(shop, "tidegate_rollout_step", **mine)
        again = shop.status()
        return (
            status == again  # nothing moved while the metrics were read
            and status.get("currentStepIndex") == 1
            and weight == status.get("canaryWeight") == 30
            and step == 1
        )

    wait_until(at_second_step, "the metrics at step 2 (weight 30) as the status says", 90)
    assert (
        sample(shop, "tidegate_rollout_info", **mine, strategy="canary", phase="Progressing") == 1
    )
    assert sample(shop, "tidegate_rollout_info", **mine, strategy="canary", phase="Failed") is None
    shop.wait_phase("Succeeded", 120)
    wait_counted(shop, "succeeded")
    assert sample(shop, "tidegate_rollouts_total", **mine, result="succeeded") == 1
    passed = sample(
        shop, "tidegate_analysis_measurements_total", **mine, metric="error-rate", result="passed"
    )
    assert passed is not None and passed >= 3  # one per step
    assert (sample(shop, "tidegate_rollout_duration_seconds_count") or 0) >= 2
    assert (sample(shop, "tidegate_reconcile_duration_seconds_count") or 0) > 0
    assert (sample(shop, "tidegate_metric_query_duration_seconds_count") or 0) > 0
    patched = sample(
        shop,
        "tidegate_kube_requests_total",
        verb="patch",
        resource="httproutes.gateway.networking.k8s.io",
        code="2xx",
    )
    assert patched is not None and patched > 0

    # Every panel of the dashboard, as Grafana would ask.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    assert len(exprs) >= 10
    empty: list[str] = []
    for title, expr in exprs:
        try:
            wait_until(lambda e=expr: has_data(query(prometheus, e)), f"data for {title!r}", 30)
        except Exception:
            empty.append(f"{title}: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)
