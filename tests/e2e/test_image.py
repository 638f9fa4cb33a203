"""The operator image (`make image`), run as the Helm chart runs it (`make image-test`):
$TIDEGATE_OPERATOR_IMAGE names it, and every operator the e2e tests start runs in it
(tidegate_devenv.container). This module checks the image itself; `make image-test` runs it
with the rollout and leader-election tests. Skipped without $TIDEGATE_OPERATOR_IMAGE."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tidegate_devenv.container import UID, operator_image
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import start_operator

IMAGE = operator_image()
pytestmark = pytest.mark.skipif(
    IMAGE is None, reason="no $TIDEGATE_OPERATOR_IMAGE: `make image-test` runs these"
)
RUN = ["podman", "--runtime", "runc", "run", "--rm", "--pull", "never",
       "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]  # fmt: skip


def in_image(*argv: str, entrypoint: str) -> subprocess.CompletedProcess[str]:
    assert IMAGE is not None
    return subprocess.run(
        [*RUN, "--entrypoint", entrypoint, IMAGE, *argv],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_running_operator_is_uid_10001_on_a_read_only_root_with_no_capabilities(
    environment: EnvironmentInfo, rollout_crd: None, tmp_path: Path
) -> None:
    operator = start_operator(environment, tmp_path / "operator.log")  # ready, or it raises
    try:
        with urllib.request.urlopen(f"{operator.metrics_url}/metrics", timeout=5) as answer:
            assert b"tidegate_leader" in answer.read()
        inspected = subprocess.run(
            ["podman", "inspect", operator.identity], capture_output=True, text=True, check=True
        )
        (container,) = json.loads(inspected.stdout)
        assert container["Config"]["User"] == f"{UID}:{UID}"
        assert container["HostConfig"]["ReadonlyRootfs"] is True
        assert container["EffectiveCaps"] in (None, [])
    finally:
        operator.stop()
    assert operator.process.returncode == 0, operator.log.read_text()[-2000:]


def test_the_image_holds_no_shell_no_package_manager_and_no_pip() -> None:
    for shell in ("/bin/sh", "/bin/bash", "/usr/bin/dash"):
        assert in_image("-c", "true", entrypoint=shell).returncode != 0, shell
    for tool in ("/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/gcc", "/usr/bin/perl"):
        assert in_image("--version", entrypoint=tool).returncode != 0, tool
    found = in_image("-m", "pip", "--version", entrypoint="/opt/tidegate/bin/python")
    assert found.returncode != 0 and "No module named pip" in found.stderr
    listed = in_image("--help", entrypoint="tidegate")
    assert listed.returncode == 0 and "loadtester" in listed.stdout
