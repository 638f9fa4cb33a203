"""spec.analysis.load against a real control plane, Prometheus and the dev gateway: a canary
that gets no organic traffic at all (nothing is sent to its host) is measured on the load a
real `tidegate loadtester` process sends it, by Service name through the gateway, as a pod
in the cluster would."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from rollout_support import route_host, set_version

from tidegate.loadtester import TOKEN_ENV
from tidegate_devenv.cluster import KubectlRunner, free_port, http_ok
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.processes import stop_process_group
from tidegate_devenv.waiting import wait_until

LOAD_URL = "http://{{ canaryService }}.{{ namespace }}.svc:80/"
# The loadtester takes jobs only with this bearer token, which the operator sends.
TOKEN = {TOKEN_ENV: "e2e-loadtester-token"}


class LocalLoadtester:
    """`tidegate loadtester` as a local process, reaching Services through the dev gateway
    (--connect-to) as it would through cluster DNS and kube-proxy in a cluster."""

    def __init__(
        self, environment: EnvironmentInfo, log: Path, *, via_gateway: bool = True
    ) -> None:
        gateway = environment.gateway_url.removeprefix("http://").rstrip("/")
        listen = f"127.0.0.1:{free_port()}"
        self.url = f"http://{listen}"
        connect_to = ["--connect-to", gateway] if via_gateway else []
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tidegate", "loadtester", "--listen", listen,
                 *connect_to, "--max-rate", "200", "--max-duration", "120"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **TOKEN},
            )  # fmt: skip
        wait_until(lambda: http_ok(f"{self.url}/healthz"), "the loadtester's /healthz", 30, log)

    def _get(self, path: str) -> str:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {TOKEN[TOKEN_ENV]}"}
        )
        with urllib.request.urlopen(request, timeout=2) as response:
            text: str = response.read().decode()
            return text

    def jobs(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self._get("/jobs"))["jobs"]
        return found

    def sent(self, job: str, code: str) -> float:
        for family in text_string_to_metric_families(self._get("/metrics")):
            for sample in family.samples:
                if sample.name == "loadtester_requests_total" and sample.labels == {
                    "job": job,
                    "code": code,
                }:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        stop_process_group(self.process, 10)


@pytest.fixture
def loadtester(environment: EnvironmentInfo, tmp_path: Path) -> Iterator[LocalLoadtester]:
    process = LocalLoadtester(environment, tmp_path / "loadtester.log")
    try:
        yield process
    finally:
        process.stop()


def rollout(load: dict[str, Any] | None) -> str:
    found = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    if load is not None:
        found["spec"]["analysis"]["load"] = load
    return yaml.safe_dump(found)


@contextlib.contextmanager
def quiet_shop(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    tmp_path: Path,
    rollout_yaml: str,
) -> Iterator[Callable[[], dict[str, Any]]]:
    """The canary example on a hostname of its own that nothing sends requests to, with its
    rollout and an operator, initialised; yields a reader of the rollout's status."""
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [route_host(namespace, obj["metadata"]["name"])]
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=rollout_yaml)
    operator = start_operator(
        environment, tmp_path / "operator.log", namespaces=[namespace], env=TOKEN
    )
    try:

        def status() -> dict[str, Any]:
            return read_status(kubectl, namespace, "shop")

        wait_until(status, "Initialized", 60, until=lambda s: s.get("phase") == "Initialized")
        yield status
    finally:
        operator.stop()


def wait_phase(status: Callable[[], dict[str, Any]], phase: str, timeout: float) -> dict[str, Any]:
    return wait_until(status, f"phase {phase}", timeout, until=lambda s: s.get("phase") == phase)


def organic_canary_requests(environment: EnvironmentInfo, namespace: str) -> float:
    """Requests the gateway routed to shop-canary by the HTTPRoute (not by Service name)."""
    with urllib.request.urlopen(
        f"{environment.gateway_metrics_url}/metrics", timeout=2
    ) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gateway_requests_total"
        and sample.labels.get("namespace") == namespace
        and sample.labels.get("backend") == "shop-canary"
        and sample.labels.get("route") == "shop"
    )


def test_a_canary_with_no_organic_traffic_is_promoted_on_the_built_in_load(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
    loadtester: LocalLoadtester,
) -> None:
    load = {"url": LOAD_URL, "rate": 30, "loadtester": loadtester.url}
    with quiet_shop(environment, kubectl, namespace, tmp_path, rollout(load)) as status:
        set_version(kubectl, namespace, "1.1.0")
        done = wait_phase(status, "Succeeded", 120)
    assert [m["phase"] for m in done["metrics"]] == ["Passed", "Passed"], done["metrics"]
    job = f"{namespace}/shop"
    assert loadtester.sent(job, "200") > 0
    assert loadtester.sent(job, "error") == 0
    assert organic_canary_requests(environment, namespace) == 0
    # Nothing renews the lease any more: the job ends by itself.
    wait_until(loadtester.jobs, "the job to end", 30, until=lambda jobs: jobs == [])


def test_a_canary_that_errors_under_the_load_is_rolled_back(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
    loadtester: LocalLoadtester,
) -> None:
    load = {"url": LOAD_URL, "rate": 30, "loadtester": loadtester.url}
    with quiet_shop(environment, kubectl, namespace, tmp_path, rollout(load)) as status:
        set_version(kubectl, namespace, "1.2.0", error_rate=0.5)
        failed = wait_phase(status, "Failed", 120)
    assert 'metric "error-rate" value' in failed["message"], failed["message"]
    assert "outside [-inf, 0.05]" in failed["message"]
    assert failed["canaryWeight"] == 0
    assert loadtester.sent(f"{namespace}/shop", "500") > 0


def test_without_the_load_the_same_canary_is_inconclusive_and_rolled_back(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    with quiet_shop(environment, kubectl, namespace, tmp_path, rollout(None)) as status:
        set_version(kubectl, namespace, "1.1.0")
        failed = wait_phase(status, "Failed", 120)
    assert "inconclusive 3 in a row of limit 3" in failed["message"], failed["message"]
    assert failed["failedChecks"] == 0


class HeaderSink:
    """A local HTTP server that answers 200 and keeps the headers of each request."""

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_headers_from_a_secret_reach_the_load_target_and_nothing_the_rollout_shows(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    """load.headersSecretRef: the Secret's headers go with every request the loadtester
    sends; the rollout (which other regions' wave readers may read), its status and its
    Events never hold the value."""
    token = "t0ken-" + namespace  # nothing else in the cluster holds this text
    kubectl.check(
        "create", "secret", "generic", "load-auth", "-n", namespace,
        f"--from-literal=X-Load-Token={token}",
    )  # fmt: skip
    sink = HeaderSink()
    loader = LocalLoadtester(environment, tmp_path / "loadtester.log", via_gateway=False)
    try:
        load = {
            "url": sink.url,
            "rate": 20,
            "loadtester": loader.url,
            "headers": {"X-Tenant": namespace},
            "headersSecretRef": {"name": "load-auth"},
        }
        with quiet_shop(environment, kubectl, namespace, tmp_path, rollout(load)) as status:
            set_version(kubectl, namespace, "1.1.0")
            wait_until(
                lambda: [h for h in list(sink.seen) if h.get("X-Load-Token") == token],
                "a load request with the Secret's header", 60,
            )  # fmt: skip
            assert all(h.get("X-Tenant") == namespace for h in sink.seen)
            shown = kubectl.check("get", "progressiverollout", "shop", "-n", namespace, "-oyaml")
            events = kubectl.check("get", "events", "-n", namespace, "-oyaml")
            assert token not in shown + events
            assert status().get("phase") in ("Progressing", "Paused", "Succeeded", "Failed")
    finally:
        loader.stop()
        sink.stop()
