"""The e2e session: one real environment for all tests, torn down even when they fail.

TIDEGATE_TEST_KUBECONFIG names an existing cluster (kind, k3d, a real one) to use instead
of starting a local control plane; Prometheus and the gateway still run on this machine.

The gateway's weighted choices are seeded ($TIDEGATE_GATEWAY_SEED, else GATEWAY_SEED), so a
test's traffic shares are the same from run to run; with every test on a hostname, and so a
route, of its own, no other test's requests change them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment

E2E_DIR = Path(__file__).parent
GATEWAY_SEED = 20240611


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentInfo]:
    state_dir = tmp_path_factory.mktemp("environment")
    external = os.environ.get("TIDEGATE_TEST_KUBECONFIG")
    info = start_environment(
        state_dir,
        kubeconfig=Path(external) if external else None,
        gateway_seed=int(os.environ.get("TIDEGATE_GATEWAY_SEED", GATEWAY_SEED)),
    )
    try:
        yield info
    finally:
        stop_environment(state_dir)


@pytest.fixture(scope="session")
def kubectl(environment: EnvironmentInfo) -> KubectlRunner:
    return KubectlRunner(Path(environment.kubectl), Path(environment.kubeconfig))


@pytest.fixture
def namespace(kubectl: KubectlRunner) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl.check("create", "namespace", name)
    try:
        yield name
    finally:
        # Routes first and for good: the dev gateway must not match a dying namespace's
        # route for the next test's hostname.
        kubectl.run("delete", "httproutes", "--all", "-n", name, "--wait=true")
        kubectl.run("delete", "namespace", name, "--wait=false")
