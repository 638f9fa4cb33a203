"""Inconclusive measurements against a real Prometheus that is stopped and started: a
Prometheus of the test's own (the same binary and configuration as the environment's,
scraping the same dev gateway), so that stopping it leaves the other tests' alone."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from rollout_support import Shop, set_version

from tidegate_devenv import prometheus
from tidegate_devenv.cluster import free_port, http_ok
from tidegate_devenv.environment import SCRAPE_INTERVAL, EnvironmentInfo
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.waiting import wait_until


class OwnPrometheus:
    """A real Prometheus a test may stop and start again (its data kept between)."""

    def __init__(self, environment: EnvironmentInfo, directory: Path) -> None:
        gateway = environment.gateway_metrics_url.removeprefix("http://").split("/")[0]
        targets = directory / "targets"
        targets.mkdir(parents=True)
        self.config = directory / "prometheus.yml"
        self.config.write_text(prometheus.render_config(SCRAPE_INTERVAL, [gateway], targets))
        self.data = directory / "data"
        self.log = directory / "prometheus.log"
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = prometheus.prometheus_command(
            prometheus.prometheus_binary(), self.config, self.data, self.address
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(lambda: http_ok(f"{self.url}/-/ready"), "the test's Prometheus", 60, self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process, 10)
            self.process = None


@pytest.fixture
def own_prometheus(environment: EnvironmentInfo, tmp_path: Path) -> Iterator[OwnPrometheus]:
    server = OwnPrometheus(environment, tmp_path / "prometheus")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def rollout(url: str, **analysis: object) -> str:
    found = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    found["spec"]["analysis"].update({"prometheus": {"address": url}, **analysis})
    # The error rate only: what is measured here is the outage, not this machine's latency.
    metrics = found["spec"]["analysis"]["metrics"]
    found["spec"]["analysis"]["metrics"] = [m for m in metrics if m["name"] == "error-rate"]
    return yaml.safe_dump(found)


def at_second_step(shop: Shop) -> None:
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("currentStepIndex") == 1 and s.get("inconclusiveChecks", 0) == 0,
        "step 2 (weight 30)",
    )


def test_an_outage_of_two_intervals_holds_the_step_then_the_rollout_goes_on(
    start_shop: Callable[..., Shop], own_prometheus: OwnPrometheus
) -> None:
    # An interval long enough for the restarted Prometheus to have scraped twice (a rate
    # needs two samples) before the third measurement, which would reach the limit.
    shop = start_shop(rollout(own_prometheus.url, interval="8s"))
    at_second_step(shop)
    own_prometheus.stop()
    held = shop.wait_status(
        lambda s: s.get("inconclusiveChecks") == 2, "two inconclusive checks", timeout=60
    )
    assert held["phase"] == "Progressing" and held["currentStepIndex"] == 1, held
    assert held["canaryWeight"] == 30 and shop.weight() == 30
    assert held["failedChecks"] == 0
    assert held["metrics"][0]["phase"] == "Error", held["metrics"]
    own_prometheus.start()
    done = shop.wait_phase("Succeeded", 120)
    assert done["stableRevision"] == held["canaryRevision"]


def test_an_outage_past_the_limit_rolls_back(
    start_shop: Callable[..., Shop], own_prometheus: OwnPrometheus
) -> None:
    shop = start_shop(rollout(own_prometheus.url))
    at_second_step(shop)
    own_prometheus.stop()
    failed = shop.wait_phase("Failed", 60)
    assert "inconclusive 3 in a row of limit 3" in failed["message"], failed["message"]
    assert failed["canaryWeight"] == 0 and shop.weight() == 0
    assert failed["failedChecks"] == 0


def test_an_outage_past_the_limit_pauses_when_asked_to(
    start_shop: Callable[..., Shop], own_prometheus: OwnPrometheus
) -> None:
    shop = start_shop(rollout(own_prometheus.url, onInconclusive="Pause", inconclusiveLimit=2))
    at_second_step(shop)
    own_prometheus.stop()
    paused = shop.wait_status(lambda s: s.get("inconclusivePause") is True, "paused")
    assert paused["phase"] == "Paused" and paused["canaryWeight"] == 30
    own_prometheus.start()
    shop.promote()
    done = shop.wait_phase("Succeeded", 120)
    assert done["inconclusivePause"] is False
