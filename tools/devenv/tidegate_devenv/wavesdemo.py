"""`tidegate-dev demo --waves`: one release walking regions a → b → c, each region only after
the one before it has had it Succeeded for a soak; then a bad release that fails in region a
and never reaches b or c.

Three control planes (`tidegate_devenv.regions`), each with its own tidegate, copy of the shop
and load; one Prometheus. Everything runs in ./.state/demo-waves (or
$TIDEGATE_DEMO_STATE_DIR) and is torn down at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.demo import run_and_tear_down
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import (
    OperatorProcess,
    install_crd,
    kubectl_for,
    read_status,
    start_operator,
)
from tidegate_devenv.readers import write_reader_secrets
from tidegate_devenv.regional import chain, regional_app, regional_rollout, release_patch
from tidegate_devenv.regions import RegionsInfo, start_regions, stop_regions
from tidegate_devenv.traffic import LiveLoad
from tidegate_devenv.waiting import WaitTimeout, wait_until

NAMESPACE = "demo"
HOST = "shop.example.com"
NAMES = ["a", "b", "c"]
SOAK_SECONDS = 10
RPS = 20.0
REFRESH_SECONDS = 1.0
ACT_TIMEOUT = 300.0


@dataclass
class Region:
    info: EnvironmentInfo
    kubectl: KubectlRunner
    operator: OperatorProcess
    load: LiveLoad

    @property
    def name(self) -> str:
        return self.info.cluster

    def status(self) -> dict[str, Any]:
        return read_status(self.kubectl, NAMESPACE, "shop")


def region_line(region: Region, status: dict[str, Any]) -> str:
    """One region: its phase, why it waits (or what happens), and where its traffic goes."""
    wave: dict[str, Any] = next(
        (c for c in status.get("conditions", []) if c["type"] == "Wave"), {}
    )
    phase = status.get("phase", "-")
    why = wave.get("message", "") if phase == "WaitingForWave" else status.get("message", "")
    traffic = region.load.recent(3.0)
    return f"  {region.name}  {phase:<15} {traffic.describe():<34} {why[:110]}"


class WavesDemo:
    def __init__(self, regions: list[Region], out: TextIO) -> None:
        self.regions = regions
        self.out = out

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def act(self, title: str, patch: str, done: set[str]) -> dict[str, dict[str, Any]]:
        """Change every region's Deployment at once (as a GitOps sync would), then show the
        regions until each one's phase is in `done`; their last statuses."""
        self.say(f"--- {title}: the same change applied in {', '.join(NAMES)} at once")
        for region in self.regions:
            region.kubectl.check("patch", "-n", NAMESPACE, "deployment/shop", "-p", patch)
        began, last = time.monotonic(), ""
        statuses: dict[str, dict[str, Any]] = {}

        def finished() -> bool:
            nonlocal last
            for region in self.regions:
                statuses[region.name] = region.status()
            lines = [region_line(r, statuses[r.name]) for r in self.regions]
            text = "\n".join(lines)
            if text != last:
                self.say(f"[{time.monotonic() - began:5.1f}s]\n{text}")
                last = text
            return {s.get("phase") for s in statuses.values()} <= done

        with contextlib.suppress(WaitTimeout):
            wait_until(finished, title, ACT_TIMEOUT, interval=REFRESH_SECONDS)
        return statuses

    def run(self) -> int:
        good = self.act("release 1.1.0", release_patch("1.1.0"), {"Succeeded"})
        order = sorted(NAMES, key=lambda n: good[n].get("rolloutStartedAt", ""))
        self.say(f"1.1.0 reached the regions in this order: {' → '.join(order)}")
        bad = self.act("release 1.2.0 (fails half its requests)", release_patch("1.2.0", 0.5),
                       {"Failed"})  # fmt: skip
        rejected = [
            n
            for n in NAMES[1:]
            if any(c.get("reason") == "RejectedUpstream" for c in bad[n].get("conditions", []))
        ]
        reached = [r.name for r in self.regions[1:] if r.load.seen("1.2.0")]
        self.say(
            f"1.2.0: {bad['a'].get('phase')} in a; RejectedUpstream in "
            f"{', '.join(rejected) or 'none'}; served in b or c: {', '.join(reached) or 'never'}"
        )
        walked = order == NAMES and all(good[n].get("phase") == "Succeeded" for n in NAMES)
        stopped = rejected == NAMES[1:] and not reached
        return 0 if walked and stopped else 1


@contextlib.contextmanager
def running_regions(info: RegionsInfo, state_dir: Path) -> Iterator[list[Region]]:
    """The shop, its regional rollout, an operator and load in every region."""
    waves = chain(NAMES, NAMESPACE, SOAK_SECONDS)
    regions: list[Region] = []
    try:
        for name in NAMES:
            kubectl = kubectl_for(info.region(name))
            install_crd(kubectl)
            kubectl.check("create", "namespace", NAMESPACE)
        write_reader_secrets(info, NAMESPACE)
        for name in NAMES:
            environment = info.region(name)
            kubectl = kubectl_for(environment)
            kubectl.check("apply", "-n", NAMESPACE, "-f", "-", stdin=regional_app(host=HOST))
            rollout = regional_rollout(name, waves[name])
            kubectl.check("apply", "-n", NAMESPACE, "-f", "-", stdin=rollout)
            operator = start_operator(
                environment, state_dir / "logs" / f"operator-{name}.log", namespaces=[NAMESPACE]
            )
            load = LiveLoad(environment.gateway_url, HOST, rps=RPS)
            regions.append(Region(environment, kubectl, operator, load))
            load.start_in_thread()
        for region in regions:
            wait_until(
                lambda r=region: r.status().get("phase") == "Initialized",  # type: ignore[misc]
                f"region {region.name} initialised",
                120,
            )
        yield regions
    finally:
        for region in regions:
            region.load.stop()
            region.operator.stop()


def run_waves_demo(out: TextIO = sys.stdout) -> int:
    state_dir = Path(
        os.environ.get("TIDEGATE_DEMO_STATE_DIR", Path.cwd() / ".state" / "demo-waves")
    )

    def run() -> int:
        print(f"starting three regions ({', '.join(NAMES)}) in {state_dir} ...", flush=True)
        info = start_regions(state_dir, NAMES)
        print(f"regions up in {info.started_in_seconds}s", flush=True)
        with running_regions(info, state_dir) as regions:
            print(
                f"b waits for a, c for b, each for {SOAK_SECONDS}s of Succeeded there; "
                f"load: {RPS:.0f} requests/s in each region",
                flush=True,
            )
            return WavesDemo(regions, out).run()

    return run_and_tear_down(run, lambda: stop_regions(state_dir), state_dir)
