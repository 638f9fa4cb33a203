"""The ClusterMetricTemplates of examples/gateways against a real Prometheus holding samples
in each implementation's own metric names and labels.

The samples are written with Prometheus' backfill (`promtool tsdb create-blocks-from
openmetrics`) into a data directory of their own, and a Prometheus of this module's own
serves it. Each template is resolved for the canary example's rollout with the operator's
template code and measured with its Prometheus adapter, the way the reconciler does.

In every implementation's samples the canary answers 5% of its requests with a 5xx (and
some with a 4xx, which is no error), and 2% of them take between 100 and 250 ms, the
bucket that holds its 99th percentile. The stable
version, a neighbouring namespace, and what other reporters saw of the same requests all
have other numbers, so a query that counts any of them gives a different answer.

NGINX Gateway Fabric (with NGINX Plus) has no latency histogram, only each upstream
peer's average response time. Its canary's responses come from two peers with different
averages, so the average its template gives is right only if it weights each peer by its
responses.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from tidegate import api, reconciler, templates
from tidegate.adapters.prometheus import PrometheusMetrics
from tidegate_devenv.cluster import free_port, http_ok
from tidegate_devenv.paths import REPO
from tidegate_devenv.prometheus import prometheus_binary, prometheus_command
from tidegate_devenv.waiting import wait_until

GATEWAYS = REPO / "examples" / "gateways"
ROLLOUT = REPO / "examples" / "canary" / "rollout.yaml"
# Every query is asked this long after the step began: its {{ window }} is 300s.
SINCE_STEP = timedelta(minutes=5)
STEP_SECONDS = 15
STEPS = 40  # ten minutes of samples, the last one written just before Prometheus starts

# Per scrape step, for each version: requests by response code, and cumulative latency
# buckets (upper bound in seconds -> requests at most that slow).
Counts = dict[str, int]
CANARY_CODES: Counts = {"200": 180, "404": 10, "503": 10}
CANARY_BUCKETS = {0.05: 180, 0.1: 196, 0.25: 200, 1.0: 200}
STABLE_CODES: Counts = {"200": 100, "500": 100}
STABLE_BUCKETS = {0.05: 0, 0.1: 0, 0.25: 0, 1.0: 200}
# What a second reporter (the backend's own sidecar, or the client side) saw: no errors.
OTHER_CODES: Counts = {"200": 200}
# A neighbouring namespace's canary, with the same names: every request fails.
NEIGHBOUR_CODES: Counts = {"503": 200}
# Where a gateway reports each upstream peer (a Pod) on its own: the canary's requests as
# two peers answered them (together CANARY_CODES), each with its average response time in
# seconds. The stable version and the neighbour have one peer each, and slower ones.
CANARY_PEERS: list[tuple[str, Counts, float]] = [
    ("10.0.1.1:8080", {"200": 140, "404": 5, "503": 5}, 0.04),
    ("10.0.1.2:8080", {"200": 40, "404": 5, "503": 5}, 0.12),
]
STABLE_PEER = ("10.0.2.1:8080", 0.5)
NEIGHBOUR_PEER = ("10.0.3.1:8080", 0.9)


def requests_of(codes: Counts) -> int:
    return sum(codes.values())


EXPECTED_ERROR_RATE = CANARY_CODES["503"] / requests_of(CANARY_CODES)  # 0.05


def expected_p99() -> float:
    """histogram_quantile's answer for the canary's buckets: linear within the bucket that
    holds the 99th percentile request (here 100-250 ms)."""
    rank = 0.99 * requests_of(CANARY_CODES)
    lower, below = 0.0, 0
    for bound, count in sorted(CANARY_BUCKETS.items()):
        if count >= rank:
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    raise AssertionError("the 99th percentile is beyond the last bucket")


def expected_average() -> float:
    """The canary's average response time over its responses: each peer's average weighted
    by the responses it gave (here 60 ms; the peers' plain mean would be 80 ms)."""
    weighted = sum(requests_of(codes) * seconds for _, codes, seconds in CANARY_PEERS)
    return weighted / requests_of(CANARY_CODES)


Labels = dict[str, str]


@dataclass(frozen=True)
class Shape:
    """One implementation's metric names and labels."""

    file: str
    requests: str  # the request counter's series name
    buckets: str | None  # the latency histogram's _bucket series name, if it has one
    code_label: str
    bucket_scale: float  # the unit of the histogram (or of the average), in seconds
    # (namespace, version "canary"/"stable", reporter "own"/"other") -> identifying labels;
    # None where the implementation has no second view of the same requests.
    labels: Callable[[str, str, str], Labels | None]
    # Labels of the histogram's series beyond `labels` (some have the response code).
    bucket_labels: Labels
    # The code label's value for an HTTP status code.
    code: Callable[[str], str] = str
    # The gauge of each peer's average response time, where there is no histogram, and the
    # labels that name a peer (by its address).
    average: str | None = None
    peer: Callable[[str], Labels] | None = None
    # The kind of the latency template: "latency-p99" from a histogram, "latency-average"
    # from the peers' averages.
    latency: str = "latency-p99"

    def kinds(self) -> tuple[str, str]:
        return ("error-rate", self.latency)


def istio_labels(namespace: str, version: str, reporter: str) -> Labels:
    service = f"shop-{version}"
    return {
        "reporter": "source" if reporter == "own" else "destination",
        "destination_service": f"{service}.{namespace}.svc.cluster.local",
        "destination_service_name": service,
        "destination_service_namespace": namespace,
        "destination_workload": service,
        "destination_workload_namespace": namespace,
        "source_workload": "gateway-istio",
        "request_protocol": "http",
    }


def traefik_labels(namespace: str, version: str, reporter: str) -> Labels | None:
    if reporter != "own":
        return None
    # Traefik from v3.7.6 names a backendRef's service after its route, gateway, entry
    # point and rule, then the backend; before, after the backend and its port.
    index = 1 if version == "canary" else 0
    if namespace.endswith("-old"):
        service = f"{namespace}-shop-{version}-http-80@kubernetesgateway"
    else:
        service = (
            f"httproute-{namespace}-shop-gw-gateways-traefik-ep-web-0-1c0cf64bb328a2a2e5d8"
            f"-svc-{namespace}-shop-{version}-{index}@kubernetesgateway"
        )
    return {"service": service, "method": "GET", "protocol": "http"}


def envoy_gateway_labels(namespace: str, version: str, reporter: str) -> Labels:
    # Envoy Gateway with mergeBackends: a cluster per Service backendRef. The other reporter
    # is the cluster of the whole route rule that Envoy Gateway builds without it, which
    # serves both versions.
    if reporter == "own":
        cluster = f"service/{namespace}/shop-{version}/80/http"
    else:
        cluster = f"httproute/{namespace}/shop/rule/0"
    return {"envoy_cluster_name": cluster}


def cilium_labels(namespace: str, version: str, reporter: str) -> Labels:
    return {
        "reporter": "server" if reporter == "own" else "client",
        "destination_namespace": namespace,
        "destination_workload": f"shop-{version}",
        "method": "GET",
        "protocol": "HTTP/1.1",
    }


def nginx_gateway_fabric_labels(namespace: str, version: str, reporter: str) -> Labels | None:
    if reporter != "own":
        return None
    upstream = f"{namespace}_shop-{version}_80"
    return {"nginx_upstream_name": upstream, "nginx_zone_name": upstream}


def nginx_peer_labels(address: str) -> Labels:
    return {"nginx_peer_address": address, "nginx_peer_name": address}


SHAPES = {
    "istio": Shape(
        "istio.yaml",
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "response_code",
        0.001,
        istio_labels,
        {"response_code": "200"},
    ),
    "traefik": Shape(
        "traefik.yaml",
        "traefik_service_requests_total",
        "traefik_service_request_duration_seconds_bucket",
        "code",
        1.0,
        traefik_labels,
        {"code": "200"},
    ),
    "cilium": Shape(
        "cilium.yaml",
        "hubble_http_requests_total",
        "hubble_http_request_duration_seconds_bucket",
        "status",
        1.0,
        cilium_labels,
        {},
    ),
    "envoy-gateway": Shape(
        "envoy-gateway.yaml",
        "envoy_cluster_upstream_rq_xx",
        "envoy_cluster_upstream_rq_time_bucket",
        "envoy_response_code_class",
        0.001,
        envoy_gateway_labels,
        {},
        code=lambda status: status[0],
    ),
    "nginx-gateway-fabric": Shape(
        "nginx-gateway-fabric.yaml",
        "nginx_http_upstream_peer_responses_total",
        None,
        "nginx_status_range",
        0.001,
        nginx_gateway_fabric_labels,
        {},
        code=lambda status: f"{status[0]}xx",
        average="nginx_http_upstream_peer_response_time_milliseconds",
        peer=nginx_peer_labels,
        latency="latency-average",
    ),
}
# The namespace a case's rollout is in, and which implementation's samples it holds.
CASES = {
    "cilium": "cilium",
    "envoy-gateway": "envoy-gateway",
    "istio": "istio",
    "nginx-gateway-fabric": "nginx-gateway-fabric",
    "traefik": "traefik",
    "traefik-old": "traefik",
}


class Series(NamedTuple):
    name: str
    labels: Labels
    value: float  # a counter's increase per step, or a gauge's value
    counter: bool = True


def series_of(shape: Shape, namespace: str) -> list[Series]:
    """Every series of one namespace's samples."""
    out: list[Series] = []

    def add(
        version: str,
        reporter: str,
        codes: Counts,
        buckets: dict[float, int] | None,
        peer: tuple[str, float] | None = None,
    ) -> None:
        labels = shape.labels(namespace, version, reporter)
        if labels is None:
            return
        if peer is not None and shape.peer is not None:
            labels = {**labels, **shape.peer(peer[0])}
        for code, count in codes.items():
            out.append(
                Series(shape.requests, {**labels, shape.code_label: shape.code(code)}, count)
            )
        if shape.average is not None:
            assert peer is not None
            out.append(Series(shape.average, labels, peer[1] / shape.bucket_scale, counter=False))
        if shape.buckets is None:
            return
        total = requests_of(codes)
        for bound, count in (buckets or {}).items():
            le = format(bound / shape.bucket_scale, "g")
            out.append(Series(shape.buckets, {**labels, **shape.bucket_labels, "le": le}, count))
        out.append(Series(shape.buckets, {**labels, **shape.bucket_labels, "le": "+Inf"}, total))

    if shape.peer is None:
        add("canary", "own", CANARY_CODES, CANARY_BUCKETS)
        add("stable", "own", STABLE_CODES, STABLE_BUCKETS)
    else:
        together = Counter[str]()
        for _, codes, _ in CANARY_PEERS:
            together.update(codes)
        assert together == CANARY_CODES, "the peers' responses are not the canary's"
        for address, codes, seconds in CANARY_PEERS:
            add("canary", "own", codes, None, (address, seconds))
        add("stable", "own", STABLE_CODES, None, STABLE_PEER)
    add("canary", "other", OTHER_CODES, {0.05: 200})
    return out


def neighbour_series(shape: Shape, namespace: str) -> list[Series]:
    labels = shape.labels(f"{namespace}-next", "canary", "own")
    assert labels is not None
    if shape.peer is not None:
        labels = {**labels, **shape.peer(NEIGHBOUR_PEER[0])}
    code = shape.code("503")
    out = [Series(shape.requests, {**labels, shape.code_label: code}, requests_of(NEIGHBOUR_CODES))]
    if shape.average is not None:
        value = NEIGHBOUR_PEER[1] / shape.bucket_scale
        out.append(Series(shape.average, labels, value, counter=False))
    return out


def openmetrics(end: float) -> str:
    """All cases' samples, STEPS steps up to `end`, in time order (as backfill wants)."""
    series: list[Series] = []
    for namespace, implementation in CASES.items():
        shape = SHAPES[implementation]
        series += series_of(shape, namespace) + neighbour_series(shape, namespace)
    keys = [(one.name, tuple(sorted(one.labels.items()))) for one in series]
    assert len(set(keys)) == len(keys), "two series with the same name and labels"
    lines = []
    for step in range(STEPS + 1):
        at = end - (STEPS - step) * STEP_SECONDS
        for one in series:
            text = ",".join(f'{key}="{value}"' for key, value in sorted(one.labels.items()))
            value = step * one.value if one.counter else one.value
            lines.append(f"{one.name}{{{text}}} {value:.12g} {at:.3f}")
    return "\n".join(lines) + "\n# EOF\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus serving only the backfilled samples (it scrapes nothing)."""
    directory = tmp_path_factory.mktemp("gateway-metrics")
    samples = directory / "samples.om"
    samples.write_text(openmetrics(time.time()))
    data = directory / "data"
    promtool = str(Path(prometheus_binary()).with_name("promtool"))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(samples), str(data)],
        check=True,
        capture_output=True,
    )
    config = directory / "prometheus.yml"
    config.write_text("scrape_configs: []\n")
    url = f"http://127.0.0.1:{free_port()}"
    log = directory / "prometheus.log"
    command = prometheus_command(prometheus_binary(), config, data, url.removeprefix("http://"))
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_ok(f"{url}/-/ready"), "prometheus's /-/ready", 60, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def templates_in(path: Path) -> dict[str, dict[str, Any]]:
    """The ClusterMetricTemplates of one file, by name."""
    found: dict[str, dict[str, Any]] = {}
    for obj in yaml.safe_load_all(path.read_text()):
        assert obj["kind"] == "ClusterMetricTemplate", path
        found[obj["metadata"]["name"]] = obj
    return found


def gateway_templates() -> dict[str, dict[str, Any]]:
    """Every ClusterMetricTemplate in examples/gateways, by name."""
    return {
        name: obj for path in GATEWAYS.glob("*.yaml") for name, obj in templates_in(path).items()
    }


def measure(prometheus_url: str, name: str, namespace: str) -> float | None:
    """The template's value for the canary example's rollout in `namespace`, resolved and
    measured by the operator's own code."""
    template = gateway_templates()[name]
    spec = api.RolloutSpec.model_validate(yaml.safe_load(ROLLOUT.read_text())["spec"])
    variables = reconciler.query_variables(spec, namespace, SINCE_STEP)
    metric = api.Metric.model_validate(
        {"name": name, "templateRef": {"kind": "ClusterMetricTemplate", "name": name}}
    )
    resolved = templates.resolve(
        metric, template, variables, namespace=namespace, field="spec.analysis.metrics[0]"
    )
    (measurement,) = asyncio.run(
        PrometheusMetrics().measure_all(prometheus_url, [resolved], variables)
    )
    assert measurement.error is None, measurement.error
    return measurement.value


def test_every_gateway_template_is_measured_here() -> None:
    """Each file holds its implementation's two templates, and no file goes untested."""
    assert sorted(path.name for path in GATEWAYS.glob("*.yaml")) == sorted(
        shape.file for shape in SHAPES.values()
    )
    for implementation, shape in SHAPES.items():
        names = set(templates_in(GATEWAYS / shape.file))
        assert names == {f"{implementation}-{kind}" for kind in shape.kinds()}, shape.file
    assert set(CASES.values()) == set(SHAPES)


@pytest.mark.parametrize("namespace", sorted(CASES))
def test_error_rate_is_the_canarys_share_of_5xx(prometheus_url: str, namespace: str) -> None:
    value = measure(prometheus_url, f"{CASES[namespace]}-error-rate", namespace)
    assert value == pytest.approx(EXPECTED_ERROR_RATE, rel=1e-9)


def cases_with(latency: str) -> list[str]:
    return sorted(name for name, shape in CASES.items() if SHAPES[shape].latency == latency)


@pytest.mark.parametrize("namespace", cases_with("latency-p99"))
def test_latency_p99_is_within_the_canarys_slowest_bucket(
    prometheus_url: str, namespace: str
) -> None:
    value = measure(prometheus_url, f"{CASES[namespace]}-latency-p99", namespace)
    assert value is not None
    assert 0.1 < value <= 0.25
    assert value == pytest.approx(expected_p99(), rel=1e-9)


@pytest.mark.parametrize("namespace", cases_with("latency-average"))
def test_latency_average_weights_each_peer_by_its_responses(
    prometheus_url: str, namespace: str
) -> None:
    value = measure(prometheus_url, f"{CASES[namespace]}-latency-average", namespace)
    assert value == pytest.approx(expected_average(), rel=1e-9)


@pytest.mark.parametrize("implementation", sorted(SHAPES))
def test_no_requests_is_no_data(prometheus_url: str, implementation: str) -> None:
    """A namespace with no samples: no data, which the analysis counts as a failed
    measurement, never as a pass."""
    for kind in SHAPES[implementation].kinds():
        assert measure(prometheus_url, f"{implementation}-{kind}", "nothing-here") is None
