"""SLO burn-rate gates against the real Prometheus and the demo app's error knob, under the
shop's load (60 requests/s through the gateway): a canary that burns its error budget 20
times too fast is rolled back, one that burns it at half the rate is promoted."""

from __future__ import annotations

import time
from collections.abc import Callable

import yaml
from rollout_support import Shop, set_version

from tidegate_devenv.paths import CANARY_EXAMPLE

OBJECTIVE = 0.98  # a budget of 2% of requests failing
BURN_RATE = 10  # in both windows: a canary failing 20% of its requests
SHORT_S, LONG_S = 10, 30
INTERVAL_S = 4  # the example's analysis.interval
CANARY = 'namespace="{{ namespace }}", backend="{{ canaryService }}"'
WINDOW = "[{{ window }}]"


def rollout() -> str:
    found = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    analysis = found["spec"]["analysis"]
    del analysis["metrics"]  # the SLO alone decides
    analysis["failureLimit"] = 1
    # A fixed 10 s window has no canary data until the canary's first requests are scraped,
    # which took up to 12 s after the step began on a loaded machine: no data holds the step.
    analysis["inconclusiveLimit"] = 8
    analysis["slo"] = {
        "objective": OBJECTIVE,
        "errorQuery": f'sum(rate(gateway_requests_total{{{CANARY}, code=~"5.."}}{WINDOW}))'
        " or vector(0)",
        "totalQuery": f"sum(rate(gateway_requests_total{{{CANARY}}}{WINDOW}))",
        "windows": [{"long": f"{LONG_S}s", "short": f"{SHORT_S}s", "burnRate": BURN_RATE}],
    }
    return yaml.safe_dump(found)


def test_a_canary_burning_20_times_its_budget_is_rolled_back(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(rollout())
    set_version(shop.kubectl, shop.namespace, "1.1.0", error_rate=20 * (1 - OBJECTIVE))
    shop.wait_status(lambda s: s.get("stepStartedAt") is not None, "the first step", 90)
    began = time.monotonic()
    failed = shop.wait_phase("Failed", 120)
    took = time.monotonic() - began
    assert f'metric "slo-burn-{LONG_S}s-{SHORT_S}s" value' in failed["message"]
    assert "outside [-inf, 10]" in failed["message"]
    # Never past the first step: the first measurements already saw the burn.
    assert failed.get("currentStepIndex", 0) == 0
    bound = SHORT_S + INTERVAL_S
    print(
        f"burning 20x: rolled back {took:.1f} s after the first step began "
        f"(short window + one interval: {bound} s)"
    )


def test_a_canary_burning_half_its_budget_is_promoted(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(rollout())
    set_version(shop.kubectl, shop.namespace, "1.1.0", error_rate=0.5 * (1 - OBJECTIVE))
    done = shop.wait_phase("Succeeded", 150)
    assert done.get("failedChecks", 0) == 0
    burn = next(m for m in done["metrics"] if m["name"] == f"slo-burn-{LONG_S}s-{SHORT_S}s")
    assert burn["phase"] == "Passed" and burn["value"] < BURN_RATE
