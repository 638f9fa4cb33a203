"""The local environment itself: real scheduling, real schema checks, real traffic and metrics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import yaml
from objects import deployment, http_route, service
from prometheus_api_client import PrometheusConnect
from prometheus_client.parser import text_string_to_metric_families

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.loadgen import generate
from tidegate_devenv.processes import ProcessTable, live_processes
from tidegate_devenv.waiting import wait_until


def apply(kubectl: KubectlRunner, namespace: str, *objects: object) -> None:
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))


def test_deployment_becomes_ready_and_rolls(kubectl: KubectlRunner, namespace: str) -> None:
    apply(kubectl, namespace, deployment("web", replicas=3))
    kubectl.check("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    ready = kubectl.check(
        "get", "-n", namespace, "deployment/web", "-o", "jsonpath={.status.readyReplicas}"
    )
    assert ready == "3"

    apply(kubectl, namespace, deployment("web", replicas=3, version="v2"))
    kubectl.check("rollout", "status", "-n", namespace, "deployment/web", "--timeout=60s")
    status = json.loads(kubectl.check("get", "-n", namespace, "deployment/web", "-o", "json"))
    assert status["status"]["updatedReplicas"] == 3
    assert status["status"]["readyReplicas"] == 3
    assert status["metadata"]["generation"] == 2
    pods = json.loads(kubectl.check("get", "pods", "-n", namespace, "-l", "app=web", "-o", "json"))
    running = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(running) == 3
    for pod in running:
        assert {"name": "VERSION", "value": "v2"} in pod["spec"]["containers"][0]["env"]


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.tidegate.io"},
    "spec": {
        "group": "test.tidegate.io",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_custom_resource_breaking_its_schema_is_rejected(
    kubectl: KubectlRunner, namespace: str
) -> None:
    kubectl.apply_text(yaml.safe_dump(WIDGET_CRD))
    kubectl.wait_established("widgets.test.tidegate.io")

    def widget(size: object) -> str:
        body = {"apiVersion": "test.tidegate.io/v1", "kind": "Widget"}
        return yaml.safe_dump({**body, "metadata": {"name": "w"}, "spec": {"size": size}})

    bad = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=widget(42))
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr and "less than or equal to 10" in bad.stderr
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=widget(3))


def backend_totals(prometheus: PrometheusConnect, namespace: str) -> dict[str, float]:
    """gateway_requests_total by backend, as Prometheus last scraped it."""
    result = prometheus.custom_query(
        f'sum by (backend) (gateway_requests_total{{namespace="{namespace}"}})'
    )
    return {r["metric"]["backend"]: float(r["value"][1]) for r in result}


def gateway_totals(metrics_url: str, namespace: str) -> dict[str, float]:
    """The same counters as the gateway serves them now."""
    with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_requests_total" and sample.labels["namespace"] == namespace:
                backend = sample.labels["backend"]
                totals[backend] = totals.get(backend, 0.0) + sample.value
    return totals


def scraped_totals(environment: EnvironmentInfo, namespace: str) -> dict[str, float]:
    """Once Prometheus has scraped what the gateway counts now (no traffic meanwhile)."""
    prometheus = PrometheusConnect(environment.prometheus_url)
    return wait_until(
        lambda: backend_totals(prometheus, namespace),
        f"Prometheus to scrape the gateway's counters for {namespace}",
        30,
        until=lambda scraped: scraped == gateway_totals(environment.gateway_metrics_url, namespace),
    )


def test_gateway_splits_traffic_by_httproute_weight(
    environment: EnvironmentInfo, kubectl: KubectlRunner, namespace: str
) -> None:
    host = f"split.{namespace}.test"  # a host of the test's own
    apply(
        kubectl,
        namespace,
        deployment("one", version="v1"),
        deployment("two", version="v2"),
        service("one", "one"),
        service("two", "two"),
        http_route("split", host, [("one", 80), ("two", 20)]),
    )
    for name in ("one", "two"):
        kubectl.check("rollout", "status", "-n", namespace, f"deployment/{name}", "--timeout=60s")

    # The gateway learns of the route and starts a demo app per pod template.
    wait_until(
        lambda: asyncio.run(generate(environment.gateway_url, host=host, count=40)),
        "the gateway to serve both backends",
        60,
        until=lambda probe: bool(probe.by_version.get("v1") and probe.by_version.get("v2")),
        interval=0.5,
    )
    before = scraped_totals(environment, namespace)

    result = asyncio.run(generate(environment.gateway_url, host=host, count=2000))
    assert result.total == 2000
    assert result.by_code == {200: 2000}
    share = result.by_version["v1"] / 2000
    assert 0.75 <= share <= 0.85, result.summary()

    after = scraped_totals(environment, namespace)
    sent = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in ("one", "two")}
    assert sent == {"one": result.by_version["v1"], "two": result.by_version["v2"]}
    assert 0.75 <= sent["one"] / 2000 <= 0.85


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid, _ in live_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def test_teardown_leaves_no_process(tmp_path: Path) -> None:
    state_dir = tmp_path / "env"
    info = start_environment(state_dir)
    started = ProcessTable(state_dir).records()
    assert {r.name for r in started} >= {
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kwok", "prometheus", "gateway",
    }  # fmt: skip
    assert _processes_mentioning(str(state_dir))
    assert info.kubeconfig.startswith(str(state_dir))

    stop_environment(state_dir)
    assert ProcessTable(state_dir).alive() == []
    assert _processes_mentioning(str(state_dir)) == []
