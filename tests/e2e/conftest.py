"""The e2e session: one real environment for all tests, torn down even when they fail.

TIDEGATE_TEST_KUBECONFIG names an existing cluster (kind, k3d, a real one) to use instead
of starting a local control plane; Prometheus and the gateway still run on this machine.
The tests that need several clusters (the `regions` fixture) are then skipped.

The gateway splits a route's traffic by smooth weighted round robin, so a test's traffic
shares are the weights, give or take a request, in every run; with every test on a hostname,
and so a route, of its own, no other test's requests change them. Its other choices (a
Service's pod templates, mirrored copies) are seeded ($TIDEGATE_GATEWAY_SEED, else
GATEWAY_SEED).

The gateways run in their realistic mode: each change they see takes effect
$TIDEGATE_ROUTE_DELAY seconds later (else ROUTE_DELAY; 0 for changes at once), as with a
real gateway, and they write the HTTPRoutes' status once applied (docs/dev-cluster.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rollout_support import Shop, running_shop, scratch_namespace

from tidegate_devenv.binaries import find_helm
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.delayed import seconds_arg
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.helm import HelmRunner
from tidegate_devenv.operator_process import install_crd, kubectl_for
from tidegate_devenv.readers import write_reader_secrets
from tidegate_devenv.regions import RegionsInfo, start_regions, stop_regions

# tests/ itself: what the e2e tests share with the unit tests (hostile_specs, argocd_lua).
sys.path.insert(0, str(Path(__file__).parents[1]))

E2E_DIR = Path(__file__).parent
GATEWAY_SEED = 20240611
ROUTE_DELAY = 2.0


def route_delay() -> float:
    """The gateways' --route-delay for this session."""
    raw = os.environ.get("TIDEGATE_ROUTE_DELAY", "").strip()
    return seconds_arg(raw) if raw else ROUTE_DELAY


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
        route_delay=route_delay(),
    )
    try:
        yield info
    finally:
        stop_environment(state_dir)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegionsInfo]:
    """Three independent local control planes, regions a, b and c (tidegate_devenv.regions),
    with one Prometheus for all, tidegate's CRDs in each, and in each region's `default`
    namespace the reader RBAC and the Secrets `<other region>-reader` (key `kubeconfig`).

    For the tests of one module, stopped after them; started only for a module whose tests
    ask for it (the session's `environment` is another, single cluster).
    """
    if os.environ.get("TIDEGATE_TEST_KUBECONFIG"):
        pytest.skip(
            "TIDEGATE_TEST_KUBECONFIG names one existing cluster; the regions tests need "
            "three control planes of their own, started on this machine"
        )
    state_dir = tmp_path_factory.mktemp("regions")
    info = start_regions(
        state_dir,
        gateway_seed=int(os.environ.get("TIDEGATE_GATEWAY_SEED", GATEWAY_SEED)),
        route_delay=route_delay(),
    )
    try:
        for region in info.regions:
            install_crd(kubectl_for(region))
        write_reader_secrets(info)
        yield info
    finally:
        stop_regions(state_dir)


@pytest.fixture(scope="session")
def kubectl(environment: EnvironmentInfo) -> KubectlRunner:
    return KubectlRunner(Path(environment.kubectl), Path(environment.kubeconfig))


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> HelmRunner:
    """The real helm binary (built once by hack/build-binaries.sh), with a home of its own;
    no cluster: `lint` and `template` need none. See `helm_on_cluster` for the rest."""
    return HelmRunner(find_helm(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def helm_on_cluster(helm: HelmRunner, environment: EnvironmentInfo) -> HelmRunner:
    return HelmRunner(helm.helm, helm.home, Path(environment.kubeconfig))


@pytest.fixture
def namespace(kubectl: KubectlRunner) -> Iterator[str]:
    with scratch_namespace(kubectl) as name:
        yield name


@pytest.fixture(scope="session")
def rollout_crd(kubectl: KubectlRunner) -> None:
    install_crd(kubectl)


@pytest.fixture
def start_shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> Iterator[Callable[..., Shop]]:
    """Starts an example in the test's namespace (`rollout_support.running_shop`'s options),
    running until the test ends."""
    with contextlib.ExitStack() as stack:

        def start(rollout: str | None = None, **options: Any) -> Shop:
            return stack.enter_context(
                running_shop(environment, kubectl, namespace, tmp_path, rollout, **options)
            )

        yield start
