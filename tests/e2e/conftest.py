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

Side by side (pytest-xdist, `make e2e`'s `-n`): the workers share one environment. The
first worker to need it starts it, under a file lock, in the run's common temporary
directory; the others find it there; the controlling process stops it when the run ends.
Every test has a namespace and hostnames of its own, and every operator watches only its
test's namespaces, so tests on one environment do not see each other. A module whose
tests touch what others share (the CRDs, the API server's audit log) is marked
`own_environment` and gets an environment of its own. A module with module-scoped
fixtures (an operator run, the regions) runs on one worker (its xdist group), and each
worker draws ports from a slice of its own (TIDEGATE_PORT_SLICE).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from rollout_support import Shop, running_shop, scratch_namespace

from tidegate_devenv.binaries import find_helm
from tidegate_devenv.cluster import PORT_SLICE_ENV, KubectlRunner
from tidegate_devenv.delayed import seconds_arg
from tidegate_devenv.environment import (
    DATA_PLANE_NICE_ENV,
    EnvironmentInfo,
    load_info,
    start_environment,
    stop_environment,
)
from tidegate_devenv.gateway import SPARES_ENV
from tidegate_devenv.helm import HelmRunner
from tidegate_devenv.operator_process import install_crd, kubectl_for
from tidegate_devenv.readers import write_reader_secrets
from tidegate_devenv.regions import RegionsInfo, start_regions, stop_regions

# tests/ itself: what the e2e tests share with the unit tests (hostile_specs, argocd_lua).
sys.path.insert(0, str(Path(__file__).parents[1]))

E2E_DIR = Path(__file__).parent
GATEWAY_SEED = 20240611
ROUTE_DELAY = 2.0
SHARED = "shared-environment"  # in the run's common temporary directory

# An xdist worker ("gw3" of PYTEST_XDIST_WORKER_COUNT) draws its ports from its own slice.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw"):
    _WORKERS = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ[PORT_SLICE_ENV] = f"{_WORKER[2:]}/{_WORKERS}"
    # The shared gateway keeps a warm demo app for each template that side-by-side tests
    # may start at one moment (a stable copy and a canary each); a cold one, on a busy
    # machine, takes seconds in which a Ready pod's requests wait (demoprocs.DemoPool).
    os.environ.setdefault(SPARES_ENV, str(2 * _WORKERS))
    # And the data plane keeps its latency among them all (environment.data_plane_nice).
    os.environ.setdefault(DATA_PLANE_NICE_ENV, "-10")


def route_delay() -> float:
    """The gateways' --route-delay for this session."""
    raw = os.environ.get("TIDEGATE_ROUTE_DELAY", "").strip()
    return seconds_arg(raw) if raw else ROUTE_DELAY


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "own_environment: the module's tests get an environment of their own"
    )


def _module_scoped(item: pytest.Item) -> bool:
    fixtures = getattr(item, "_fixtureinfo", None)
    return fixtures is not None and any(
        definition.scope in ("module", "class", "package")
        for definitions in fixtures.name2fixturedefs.values()
        for definition in definitions
    )


# Before xdist's own hook, which reads the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)
            if _module_scoped(item) or item.get_closest_marker("own_environment"):
                # Its module's fixtures are set up once, on the one worker that runs it.
                item.add_marker(pytest.mark.xdist_group(Path(str(item.fspath)).stem))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controlling process of a side-by-side run stops the workers' shared environment."""
    if _WORKER:
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None and factory._basetemp is not None:
        state_dir = factory.getbasetemp() / SHARED
        if load_info(state_dir) is not None:
            stop_environment(state_dir)


def _start(state_dir: Path) -> EnvironmentInfo:
    external = os.environ.get("TIDEGATE_TEST_KUBECONFIG")
    return start_environment(
        state_dir,
        kubeconfig=Path(external) if external else None,
        gateway_seed=int(os.environ.get("TIDEGATE_GATEWAY_SEED", GATEWAY_SEED)),
        route_delay=route_delay(),
    )


@pytest.fixture(scope="session")
def shared_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvironmentInfo]:
    if not _WORKER:  # one process: the environment lives as long as this session
        state_dir = tmp_path_factory.mktemp("environment")
        try:
            yield _start(state_dir)
        finally:
            stop_environment(state_dir)
        return
    # A worker: its basetemp is popen-gwN in the directory common to the run.
    common = tmp_path_factory.getbasetemp().parent
    state_dir = common / SHARED
    with FileLock(str(common / f"{SHARED}.lock")):
        info = load_info(state_dir) or _start(state_dir)
    yield info  # stopped by the controlling process (pytest_sessionfinish)


@pytest.fixture(scope="module")
def environment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvironmentInfo]:
    """The session's shared environment, or one of the module's own (`own_environment`)."""
    # (An external cluster is the one cluster there is; those modules know to spare it.)
    # One after another, nothing runs beside such a module: the session's one will do,
    # unless the module asks for a fresh one anyway (`own_environment(fresh=True)`: it acts
    # on the whole cluster, where the tests before it may have left objects going away).
    own = request.node.get_closest_marker("own_environment")
    fresh = own is not None and bool(own.kwargs.get("fresh"))
    if not own or not (_WORKER or fresh) or os.environ.get("TIDEGATE_TEST_KUBECONFIG"):
        yield request.getfixturevalue("shared_environment")
        return
    state_dir = tmp_path_factory.mktemp("own-environment")
    try:
        yield _start(state_dir)
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


@pytest.fixture(scope="module")
def kubectl(environment: EnvironmentInfo) -> KubectlRunner:
    return KubectlRunner(Path(environment.kubectl), Path(environment.kubeconfig))


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> HelmRunner:
    """The real helm binary (built once by hack/build-binaries.sh), with a home of its own;
    no cluster: `lint` and `template` need none. See `helm_on_cluster` for the rest."""
    return HelmRunner(find_helm(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def helm_on_cluster(helm: HelmRunner, environment: EnvironmentInfo) -> HelmRunner:
    return HelmRunner(helm.helm, helm.home, Path(environment.kubeconfig))


@pytest.fixture
def namespace(kubectl: KubectlRunner) -> Iterator[str]:
    with scratch_namespace(kubectl) as name:
        yield name


_crd_installed: set[str] = set()  # the kubeconfigs of the environments this process has


@pytest.fixture(scope="module")
def rollout_crd(kubectl: KubectlRunner) -> None:
    """tidegate's CRDs, installed once per environment by each process."""
    if str(kubectl.kubeconfig) not in _crd_installed:
        install_crd(kubectl)
        _crd_installed.add(str(kubectl.kubeconfig))


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
