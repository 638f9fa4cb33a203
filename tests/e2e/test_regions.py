"""The multi-region environment itself (tidegate_devenv.regions): three control planes that
share nothing, one Prometheus telling them apart by `cluster`, the read-only kubeconfigs that
deploy/waves and its mint script give each region for the others, and a region's API server
taken away and given back. The waves themselves are tested elsewhere, on this environment."""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from objects import deployment, http_route, service
from prometheus_api_client import PrometheusConnect

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import kubectl_for, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.readers import DEFAULT_NAMESPACE as READER_NAMESPACE
from tidegate_devenv.readers import SECRET_KEY, reader_secret_name
from tidegate_devenv.regions import RegionsInfo, start_apiserver, stop_apiserver
from tidegate_devenv.waiting import wait_until

ROLLOUTS = "/apis/tidegate.io/v1alpha1/namespaces/{namespace}/progressiverollouts"


def test_the_regions_are_independent_control_planes(regions: RegionsInfo) -> None:
    a, b, c = (regions.region(name) for name in ("a", "b", "c"))
    assert len({a.server, b.server, c.server}) == 3
    assert len({a.gateway_url, b.gateway_url, c.gateway_url}) == 3

    kubectl_for(a).check("create", "configmap", "only-in-a", "-n", READER_NAMESPACE)
    for other in (b, c):
        missing = kubectl_for(other).run("get", "configmap", "only-in-a", "-n", READER_NAMESPACE)
        assert missing.returncode != 0 and "NotFound" in missing.stderr
    # Nodes of their own: the same names (kwok-node-0, ...) are other objects in each.
    node_uids = {
        region.cluster: kubectl_for(region).check(
            "get", "node", "kwok-node-0", "-o", "jsonpath={.metadata.uid}"
        )
        for region in (a, b, c)
    }
    assert len(set(node_uids.values())) == 3
    # A PKI of its own: a's admin credentials and CA are no good at b's API server.
    crossed = kubectl_for(a).run("--server", b.server, "get", "namespaces")
    assert crossed.returncode != 0 and "certificate" in crossed.stderr


def _query(prometheus_url: str, query: str) -> dict[str, float]:
    """An instant query's result by `cluster` label."""
    result = PrometheusConnect(prometheus_url).custom_query(query)
    return {r["metric"].get("cluster", ""): float(r["value"][1]) for r in result}


def _served(region: EnvironmentInfo, host: str) -> bool:
    request = urllib.request.Request(region.gateway_url, headers={"Host": host})
    with urllib.request.urlopen(request, timeout=5) as response:
        return bool(response.status == 200)


def _serve_demo_app(region: EnvironmentInfo) -> None:
    """A Deployment, Service and HTTPRoute in the region, once its gateway answers 200."""
    host = f"web.{region.cluster}.regions.test"
    objects = [
        deployment("web", version=f"v-{region.cluster}"),
        service("web", "web"),
        http_route("web", host, [("web", 100)]),
    ]
    kubectl_for(region).apply_text(yaml.safe_dump_all(objects))
    wait_until(lambda: _served(region, host), f"region {region.cluster}'s gateway", 60)


def test_one_prometheus_scrapes_every_region_with_its_cluster_label(
    regions: RegionsInfo, tmp_path: Path
) -> None:
    url = regions.prometheus_url
    wait_until(
        lambda: _query(url, 'up{job="gateway"}'),
        "Prometheus to scrape the three gateways",
        30,
        until=lambda up: up == {"a": 1.0, "b": 1.0, "c": 1.0},
    )
    # Requests through each region's gateway, to a demo app of its own (published by
    # file_sd): the gateways' series and the demo apps' targets carry their region.
    for region in regions.regions:
        _serve_demo_app(region)
    wait_until(
        lambda: _query(url, 'sum by (cluster) (gateway_requests_total{route="web", code="200"})'),
        "Prometheus to have the requests of the three gateways",
        30,
        until=lambda totals: set(totals) == {"a", "b", "c"} and min(totals.values()) >= 1,
    )
    wait_until(
        lambda: _query(url, 'up{job="demo-apps"}'),
        "Prometheus to scrape each region's demo app",
        30,
        until=lambda up: up == {"a": 1.0, "b": 1.0, "c": 1.0},
    )

    # An operator started for region b is scraped as region b's.
    operator = start_operator(
        regions.region("b"), tmp_path / "operator.log", namespaces=[READER_NAMESPACE]
    )
    try:
        wait_until(
            lambda: _query(url, f'up{{job="tidegate", identity="{operator.identity}"}}'),
            "Prometheus to scrape region b's operator",
            30,
            until=lambda up: up == {"b": 1.0},
        )
    finally:
        operator.stop()


@pytest.fixture(scope="module")
def rollout_in_a(regions: RegionsInfo) -> str:
    """A ProgressiveRollout in region a (no operator: only its object is read here)."""
    kubectl = kubectl_for(regions.region("a"))
    rollout = (CANARY_EXAMPLE / "rollout.yaml").read_text()
    kubectl.check("apply", "-n", READER_NAMESPACE, "-f", "-", stdin=rollout)
    return "shop"


@pytest.fixture(scope="module")
def reader_of_a(regions: RegionsInfo, tmp_path_factory: pytest.TempPathFactory) -> KubectlRunner:
    """kubectl with the kubeconfig region b holds to read region a (Secret a-reader)."""
    secret = kubectl_for(regions.region("b")).check(
        "get", "secret", reader_secret_name("a"), "-n", READER_NAMESPACE,
        "-o", f"jsonpath={{.data.{SECRET_KEY}}}",
    )  # fmt: skip
    path = tmp_path_factory.mktemp("reader") / "a-reader.kubeconfig"
    path.write_bytes(base64.b64decode(secret))
    return KubectlRunner(Path(regions.kubectl), path)


def test_every_region_holds_reader_secrets_for_the_others(regions: RegionsInfo) -> None:
    for region in regions.regions:
        secrets = kubectl_for(region).check(
            "get", "secrets", "-n", READER_NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}"
        )
        readers = {name for name in secrets.split() if name.endswith("-reader")}
        others = {reader_secret_name(o) for o in regions.names if o != region.cluster}
        assert readers == others, region.cluster


def test_a_reader_kubeconfig_lists_and_watches_rollouts_and_nothing_else(
    regions: RegionsInfo, rollout_in_a: str, reader_of_a: KubectlRunner
) -> None:
    config = yaml.safe_load(reader_of_a.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == regions.region("a").server
    assert "token" in config["users"][0]["user"]  # a ServiceAccount token, no client cert

    listed = reader_of_a.check("get", "progressiverollouts", "-n", READER_NAMESPACE, "-o", "name")
    assert listed.split() == [f"progressiverollout.tidegate.io/{rollout_in_a}"]
    reader_of_a.check("get", "progressiverollout", rollout_in_a, "-n", READER_NAMESPACE)
    # A watch that the server ends after a second: its first event is the rollout.
    watched = reader_of_a.check(
        "get", "--raw", ROLLOUTS.format(namespace=READER_NAMESPACE) + "?watch=1&timeoutSeconds=1"
    )
    first = json.loads(watched.splitlines()[0])
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", rollout_in_a)

    refused = [
        ("get", "secrets", "-n", READER_NAMESPACE),
        ("get", "deployments", "-n", READER_NAMESPACE),
        ("get", "progressiverollouts", "-n", "kube-system"),
        (
            "patch", "progressiverollout", rollout_in_a, "-n", READER_NAMESPACE,
            "--type=merge", "-p", '{"metadata":{"labels":{"written":"by-a-reader"}}}',
        ),
        ("delete", "progressiverollout", rollout_in_a, "-n", READER_NAMESPACE),
    ]  # fmt: skip
    for args in refused:
        result = reader_of_a.run(*args)
        assert result.returncode != 0, args
        assert "Forbidden" in result.stderr, (args, result.stderr)
    labels = kubectl_for(regions.region("a")).check(
        "get", "pro", rollout_in_a, "-n", READER_NAMESPACE, "-o", "jsonpath={.metadata.labels}"
    )
    assert "written" not in labels


@pytest.fixture
def region_a_back(regions: RegionsInfo) -> Iterator[EnvironmentInfo]:
    """Region a, its API server running again after the test whatever happened in it."""
    a = regions.region("a")
    try:
        yield a
    finally:
        if kubectl_for(a).run("get", "--raw", "/readyz", "--request-timeout=2s").returncode:
            start_apiserver(a)


def test_a_stopped_api_server_is_unreachable_until_started_again(
    regions: RegionsInfo, region_a_back: EnvironmentInfo, reader_of_a: KubectlRunner
) -> None:
    a, b = region_a_back, regions.region("b")
    admin = kubectl_for(a)
    uid = admin.check(
        "create", "configmap", "survives", "-n", READER_NAMESPACE, "-o", "jsonpath={.metadata.uid}"
    )

    stop_apiserver(a)
    down = reader_of_a.run("get", "progressiverollouts", "--request-timeout=5s")
    assert down.returncode != 0 and "refused" in down.stderr, down.stderr
    assert admin.run("get", "namespaces", "--request-timeout=5s").returncode != 0
    kubectl_for(b).check("get", "namespaces", "--request-timeout=5s")  # the others carry on

    start_apiserver(a)
    # The same address, certificates and etcd: the reader's token is still good, and the
    # objects are the same ones.
    reader_of_a.check("get", "progressiverollouts", "-n", READER_NAMESPACE)
    after = admin.check(
        "get", "configmap", "survives", "-n", READER_NAMESPACE, "-o", "jsonpath={.metadata.uid}"
    )
    assert after == uid
