"""kubectl tidegate, run as kubectl runs a plugin (`kubectl tidegate ...`, found on PATH),
against real rollouts driven by the operator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from rollout_support import RouteWatch, Shop, canary_weight_in_route, set_version

from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.paths import CANARY_EXAMPLE, REPO
from tidegate_devenv.waiting import wait_until

PLUGIN_DIR = Path(sys.executable).parent  # where the venv installed kubectl-tidegate


def rollout_with_steps(*steps: object, interval: str = "4s") -> str:
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["strategy"]["canary"]["steps"] = list(steps)
    rollout["spec"]["analysis"]["interval"] = interval
    return yaml.safe_dump(rollout)


class Plugin:
    def __init__(self, environment: EnvironmentInfo, namespace: str) -> None:
        self.kubectl = environment.kubectl
        self.namespace = namespace
        self.env = {
            **os.environ,
            "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": environment.kubeconfig,
        }

    def argv(self, *args: str) -> list[str]:
        return [self.kubectl, "tidegate", *args, "-n", self.namespace]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result.stdout

    def refused(self, *args: str) -> str:
        """A command that must fail: one line on stderr, exit 1."""
        result = self.run(*args)
        assert result.returncode == 1, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]


class Watching:
    """`kubectl tidegate get NAME --watch` in the background, its frames collected."""

    def __init__(self, plugin: Plugin, name: str) -> None:
        self.frames: list[str] = []
        self.process = subprocess.Popen(
            plugin.argv("get", name, "--watch"),
            env=plugin.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        frame: list[str] = []
        for line in self.process.stdout:
            if line.rstrip("\n") == "-" * 60:
                self.frames.append("".join(frame))
                frame = []
            else:
                frame.append(line)

    def stop(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=10)
        self._reader.join(timeout=5)
        return err


@pytest.fixture
def plugin(environment: EnvironmentInfo, namespace: str) -> Plugin:
    return Plugin(environment, namespace)


@pytest.fixture
def shop(start_shop: Callable[..., Shop]) -> Iterator[Shop]:
    yield start_shop(
        rollout_with_steps({"setWeight": 10}, {"pause": {}}, {"setWeight": 30}, {"setWeight": 60})
    )


def test_get_watch_shows_each_step_and_weight_and_status_exits_0(
    start_shop: Callable[..., Shop], plugin: Plugin
) -> None:
    shop = start_shop(rollout_with_steps({"setWeight": 10}, {"setWeight": 30}, {"setWeight": 60}))
    watching = Watching(plugin, "shop")
    wait_until(lambda: watching.frames, "the first frame", 30)
    assert "Phase:       Initialized" in watching.frames[0]
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    status = plugin.run("status", "shop", "--timeout", "3m")
    assert status.returncode == 0, (status.stdout, status.stderr)
    assert "is stable" in status.stdout.splitlines()[-1]
    assert shop.phase() == "Succeeded"
    wait_until(
        lambda: any("Phase:       Succeeded" in f for f in watching.frames), "a Succeeded frame", 30
    )
    assert watching.stop() == ""
    frames = watching.frames
    for number, weight in ((1, 10), (2, 30), (3, 60)):
        assert any(
            f"▶ {number}. setWeight {weight}" in f
            and f"stable {100 - weight}% / canary {weight}%" in f
            for f in frames
        ), f"no frame at step {number} with weight {weight}"
    assert any("images: " in f and "Events:" in f and "error-rate" in f for f in frames)
    table = plugin.ok("get")
    assert table.splitlines()[0].split()[:5] == ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT"]
    assert table.splitlines()[1].split()[:3] == ["shop", "Canary", "Succeeded"]


def test_promote_ends_the_pause_and_promote_full_skips_the_rest(shop: Shop, plugin: Plugin) -> None:
    assert "not paused (phase Initialized)" in plugin.refused("promote", "shop")
    route = RouteWatch(shop.kubectl, shop.namespace, "shop")
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_phase("Paused")
    assert "by " in plugin.ok("promote", "shop")
    shop.wait_status(lambda s: s.get("currentStepIndex") == 2, "step 3 after the pause")
    full = plugin.ok("promote", "shop", "--full")
    assert "full promotion requested" in full
    shop.wait_phase("Succeeded")
    route.stop()
    assert 60 not in route.weights(), route.weights()
    assert shop.status()["stableRevision"] is not None
    events = plugin.ok("get", "shop")
    assert "PromotedFully" in events


def test_abort_then_retry_and_status_exit_codes(shop: Shop, plugin: Plugin) -> None:
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_phase("Paused")
    timed_out = plugin.run("status", "shop", "--timeout", "2s")
    assert timed_out.returncode == 2, (timed_out.stdout, timed_out.stderr)
    assert "can be retried (phase Paused)" in plugin.refused("retry", "shop")

    route = RouteWatch(shop.kubectl, shop.namespace, "shop")
    asked = time.monotonic()
    plugin.ok("abort", "shop")
    aborted = shop.wait_phase("Aborted", 30)
    assert aborted["canaryWeight"] == 0
    assert "asked by" in aborted["message"]
    wait_until(lambda: route.weights()[-1:] == [0], "the route on stable", 30)
    back = route.first_seen(0)
    route.stop()
    assert back is not None
    # The paused rollout would not have moved on its own: the abort took it back. How soon
    # is a figure (printed), not a bound asserted on a shared, busy machine.
    print(f"abort: the route on stable {back - asked:.2f} s after the command started")
    assert canary_weight_in_route(shop.kubectl, shop.namespace) == 0
    failed = plugin.run("status", "shop", "--timeout", "30s")
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "rolled back" in failed.stdout

    plugin.ok("retry", "shop")
    retried = shop.wait_status(
        lambda s: (
            s.get("phase") == "Paused"
            and s.get("rolloutStartedAt") != aborted.get("rolloutStartedAt")
        ),
        "the retried rollout at its pause",
    )
    assert retried["canaryRevision"] == aborted["canaryRevision"]
    plugin.ok("promote", "shop", "--full")
    done = plugin.run("status", "shop", "--timeout", "2m")
    assert done.returncode == 0, (done.stdout, done.stderr)


def test_pause_resume_and_one_line_errors(shop: Shop, plugin: Plugin) -> None:
    assert 'progressiverollout "nosuch"' in plugin.refused("get", "nosuch")
    assert "not found" in plugin.refused("abort", "nosuch")
    assert "no rollout in progress" in plugin.refused("abort", "shop")
    assert "not paused" in plugin.refused("resume", "shop")
    plugin.ok("pause", "shop")
    assert (
        shop.kubectl.check("get", "-n", shop.namespace, "pro/shop", "-o", "jsonpath={.spec.paused}")
        == "true"
    )
    assert "already paused" in plugin.refused("pause", "shop")
    plugin.ok("resume", "shop")
    assert (
        shop.kubectl.check("get", "-n", shop.namespace, "pro/shop", "-o", "jsonpath={.spec.paused}")
        == "false"
    )


def test_lint_through_kubectl(plugin: Plugin, tmp_path: Path) -> None:
    examples = sorted(str(p) for p in (REPO / "examples").rglob("*.yaml"))
    ok = subprocess.run(
        [plugin.kubectl, "tidegate", "lint", *examples],
        env=plugin.env,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(rollout_with_steps({"setWeight": 10}, {"setWeight": 101}))
    refused = subprocess.run(
        [plugin.kubectl, "tidegate", "lint", str(bad)],
        env=plugin.env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "spec.strategy.canary.steps[1].setWeight" in refused.stderr
