"""The local environment itself: real scheduling, real schema checks, real traffic and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import yaml
from objects import deployment, http_route, service
from prometheus_api_client import PrometheusConnect

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo, start_environment, stop_environment
from tidegate_devenv.loadgen import generate
from tidegate_devenv.processes import ProcessTable


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
    kubectl.check("wait", "--for=condition=Established", "crd/widgets.test.tidegate.io")

    def widget(size: object) -> str:
        body = {"apiVersion": "test.tidegate.io/v1", "kind": "Widget"}
        return yaml.safe_dump({**body, "metadata": {"name": "w"}, "spec": {"size": size}})

    bad = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=widget(42))
    assert bad.returncode != 0
    assert "spec.size" in bad.stderr and "less than or equal to 10" in bad.stderr
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=widget(3))


def backend_totals(prometheus: PrometheusConnect, namespace: str) -> dict[str, float]:
    result = prometheus.custom_query(
        f'sum by (backend) (gateway_requests_total{{namespace="{namespace}"}})'
    )
    return {r["metric"]["backend"]: float(r["value"][1]) for r in result}


def test_gateway_splits_traffic_by_httproute_weight(
    environment: EnvironmentInfo, kubectl: KubectlRunner, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        deployment("one", version="v1"),
        deployment("two", version="v2"),
        service("one", "one"),
        service("two", "two"),
        http_route("split", "split.test", [("one", 80), ("two", 20)]),
    )
    for name in ("one", "two"):
        kubectl.check("rollout", "status", "-n", namespace, f"deployment/{name}", "--timeout=60s")

    # The gateway learns of the route and starts a demo app per pod template.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = asyncio.run(generate(environment.gateway_url, host="split.test", count=40))
        if probe.by_version.get("v1") and probe.by_version.get("v2"):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the gateway never served both backends: {probe.summary()}")

    prometheus = PrometheusConnect(environment.prometheus_url)
    time.sleep(2.5)  # let a scrape (every 1 s) take in the probe traffic
    before = backend_totals(prometheus, namespace)

    result = asyncio.run(generate(environment.gateway_url, host="split.test", count=2000))
    assert result.total == 2000
    assert result.by_code == {200: 2000}
    share = result.by_version["v1"] / 2000
    assert 0.75 <= share <= 0.85, result.summary()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = backend_totals(prometheus, namespace)
        sent = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in ("one", "two")}
        if sum(sent.values()) >= 2000:
            break
        time.sleep(0.5)
    assert sent == {"one": result.by_version["v1"], "two": result.by_version["v2"]}
    assert 0.75 <= sent["one"] / 2000 <= 0.85


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry.name}: {cmdline}")
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
