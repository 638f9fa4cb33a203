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
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
KINDS = ("error-rate", "latency-p99")  # each implementation has one template of each
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


Labels = dict[str, str]


@dataclass(frozen=True)
class Shape:
    """One implementation's metric names and labels."""

    file: str
    requests: str  # the request counter's series name
    buckets: str  # the latency histogram's _bucket series name
    code_label: str
    bucket_scale: float  # the histogram's unit, in seconds
    # (namespace, version "canary"/"stable", reporter "own"/"other") -> identifying labels;
    # None where the implementation has no second view of the same requests.
    labels: Callable[[str, str, str], Labels | None]
    # Labels of the histogram's series beyond `labels` (some have the response code).
    bucket_labels: Labels
    # The code label's value for an HTTP status code.
    code: Callable[[str], str] = str


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
}
# The namespace a case's rollout is in, and which implementation's samples it holds.
CASES = {
    "cilium": "cilium",
    "envoy-gateway": "envoy-gateway",
    "istio": "istio",
    "traefik": "traefik",
    "traefik-old": "traefik",
}


def series_of(shape: Shape, namespace: str) -> list[tuple[str, Labels, int]]:
    """Every series of one namespace's samples: (name, labels, increase per step)."""
    out: list[tuple[str, Labels, int]] = []

    def add(version: str, reporter: str, codes: Counts, buckets: dict[float, int] | None) -> None:
        labels = shape.labels(namespace, version, reporter)
        if labels is None:
            return
        for code, count in codes.items():
            out.append((shape.requests, {**labels, shape.code_label: shape.code(code)}, count))
        total = requests_of(codes)
        for bound, count in (buckets or {}).items():
            le = format(bound / shape.bucket_scale, "g")
            out.append((shape.buckets, {**labels, **shape.bucket_labels, "le": le}, count))
        out.append((shape.buckets, {**labels, **shape.bucket_labels, "le": "+Inf"}, total))

    add("canary", "own", CANARY_CODES, CANARY_BUCKETS)
    add("stable", "own", STABLE_CODES, STABLE_BUCKETS)
    add("canary", "other", OTHER_CODES, {0.05: 200})
    return out


def neighbour_series(shape: Shape, namespace: str) -> list[tuple[str, Labels, int]]:
    labels = shape.labels(f"{namespace}-next", "canary", "own")
    assert labels is not None
    code = shape.code("503")
    return [(shape.requests, {**labels, shape.code_label: code}, requests_of(NEIGHBOUR_CODES))]


def openmetrics(end: float) -> str:
    """All cases' samples, STEPS steps up to `end`, in time order (as backfill wants)."""
    series: list[tuple[str, Labels, int]] = []
    for namespace, implementation in CASES.items():
        shape = SHAPES[implementation]
        series += series_of(shape, namespace) + neighbour_series(shape, namespace)
    keys = [(name, tuple(sorted(labels.items()))) for name, labels, _ in series]
    assert len(set(keys)) == len(keys), "two series with the same name and labels"
    lines = []
    for step in range(STEPS + 1):
        at = end - (STEPS - step) * STEP_SECONDS
        for name, labels, increase in series:
            text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
            lines.append(f"{name}{{{text}}} {step * increase} {at:.3f}")
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
        assert names == {f"{implementation}-{kind}" for kind in KINDS}, shape.file
    assert set(CASES.values()) == set(SHAPES)


@pytest.mark.parametrize("namespace", sorted(CASES))
def test_error_rate_is_the_canarys_share_of_5xx(prometheus_url: str, namespace: str) -> None:
    value = measure(prometheus_url, f"{CASES[namespace]}-error-rate", namespace)
    assert value == pytest.approx(EXPECTED_ERROR_RATE, rel=1e-9)


@pytest.mark.parametrize("namespace", sorted(CASES))
def test_latency_p99_is_within_the_canarys_slowest_bucket(
    prometheus_url: str, namespace: str
) -> None:
    value = measure(prometheus_url, f"{CASES[namespace]}-latency-p99", namespace)
    assert value is not None
    assert 0.1 < value <= 0.25
    assert value == pytest.approx(expected_p99(), rel=1e-9)


@pytest.mark.parametrize("implementation", sorted(SHAPES))
def test_no_requests_is_no_data(prometheus_url: str, implementation: str) -> None:
    """A namespace with no samples: no data, which the analysis counts as a failed
    measurement, never as a pass."""
    for kind in KINDS:
        assert measure(prometheus_url, f"{implementation}-{kind}", "nothing-here") is None
