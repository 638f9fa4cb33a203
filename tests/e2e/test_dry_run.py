"""A dry-run metric against the real Prometheus: a metric that fails at every measurement is
shown as failing in the status and in the operator's /metrics, and the rollout is promoted
on its other metric all the same."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families
from rollout_support import Shop, set_version

from tidegate_devenv.paths import CANARY_EXAMPLE

# Always 1, always outside its range: a metric that would roll back any rollout it gated.
FAILING = {
    "name": "never-passes",
    "query": "vector(1)",
    "thresholdRange": {"max": 0},
    "dryRun": True,
}


def rollout() -> str:
    found = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    analysis = found["spec"]["analysis"]
    # The error rate decides; latency is left out, being this machine's rather than the app's.
    analysis["metrics"] = [m for m in analysis["metrics"] if m["name"] == "error-rate"]
    analysis["metrics"].append(FAILING)
    return yaml.safe_dump(found)


def dry_run_failures(shop: Shop) -> float:
    """tidegate_analysis_measurements_total for the dry-run metric's failures, as exported."""
    wanted = {
        "namespace": shop.namespace,
        "name": "shop",
        "metric": "never-passes",
        "result": "failed",
        "dry_run": "true",
    }
    for family in text_string_to_metric_families(shop.operator.metrics_text()):
        for sample in family.samples:
            if sample.name == "tidegate_analysis_measurements_total" and all(
                sample.labels.get(k) == v for k, v in wanted.items()
            ):
                return float(sample.value)
    return 0.0


def shown_failing(status: dict[str, Any]) -> bool:
    return any(
        m.get("name") == "never-passes" and m.get("phase") == "Failed" and m.get("dryRun")
        for m in status.get("metrics") or []
    )


def test_a_failing_dry_run_metric_is_shown_and_exported_and_the_rollout_is_promoted(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(rollout())
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    during = shop.wait_status(shown_failing, "the dry-run metric shown failing", 90)
    assert during["phase"] == "Progressing"
    assert "dry run" in next(m["message"] for m in during["metrics"] if m["name"] == "never-passes")
    done = shop.wait_phase("Succeeded", 120)
    assert done.get("failedChecks", 0) == 0 and done.get("inconclusiveChecks", 0) == 0
    # Every measurement that promoted the rollout measured the dry run too, and failed it.
    assert dry_run_failures(shop) >= 3
