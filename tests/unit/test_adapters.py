"""The pure parts of the adapters: copies of the target, readiness, weights, queries."""

from __future__ import annotations

import asyncio
import copy
import math
from types import SimpleNamespace
from typing import Any

import pytest

from tidegate import api
from tidegate.adapters.cache import Cache, trim
from tidegate.adapters.gatewayapi import backend_refs
from tidegate.adapters.kube_rollouts import KubeTemplates
from tidegate.adapters.prometheus import UnknownVariable, render_query, single_value
from tidegate.adapters.workloads import (
    REVISION_ANNOTATION,
    REVISION_LABEL,
    ROLE_LABEL,
    as_template_source,
    copy_label,
    selecting,
    template_revision,
    workload_copy,
    workload_state,
)
from tidegate.reconciler import status_patch, with_problem


def target() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "shop",
            "namespace": "prod",
            "labels": {"app": "shop"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"},
        },
        "spec": {
            "replicas": 3,
            "minReadySeconds": 5,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {
                "metadata": {"labels": {"app": "shop"}},
                "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
            },
        },
    }


def test_revision_ignores_key_order_but_not_content() -> None:
    template = target()["spec"]["template"]
    reordered = {"spec": template["spec"], "metadata": template["metadata"]}
    assert template_revision(template) == template_revision(reordered)
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "shop:2"
    assert template_revision(changed) != template_revision(template)


def test_a_copy_is_named_and_labelled_by_its_revision_and_keeps_the_rest() -> None:
    canary = workload_copy(target(), "shop-rollout", "abc", 2)
    assert canary["metadata"]["name"] == "shop-abc"
    assert canary["metadata"]["annotations"] == {"team": "a", REVISION_ANNOTATION: "abc"}
    assert canary["metadata"]["labels"] == {
        "app": "shop", REVISION_LABEL: "abc", "tidegate.io/rollout": "shop-rollout"
    }  # fmt: skip
    assert canary["spec"]["replicas"] == 2
    assert canary["spec"]["minReadySeconds"] == 5
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "shop", REVISION_LABEL: "abc"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {
        "app": "shop",
        REVISION_LABEL: "abc",
    }
    assert copy_label(canary) == {REVISION_LABEL: "abc"}
    assert target()["spec"]["template"]["metadata"]["labels"] == {"app": "shop"}  # untouched


def test_a_copy_gives_back_the_template_it_was_made_from() -> None:
    original = target()
    canary = workload_copy(original, "r", "abc", 2)
    source = as_template_source(canary, "shop")
    assert template_revision(source["spec"]["template"]) == template_revision(
        original["spec"]["template"]
    )
    # A copy made before copies were keyed by revision, too.
    legacy = copy.deepcopy(canary)
    for labels in (
        legacy["spec"]["selector"]["matchLabels"],
        legacy["spec"]["template"]["metadata"]["labels"],
    ):
        del labels[REVISION_LABEL]
        labels[ROLE_LABEL] = "stable"
    assert copy_label(legacy) == {ROLE_LABEL: "stable"}
    source = as_template_source(legacy, "shop")
    assert template_revision(source["spec"]["template"]) == template_revision(
        original["spec"]["template"]
    )


def test_a_selector_moves_from_one_copy_label_to_the_other() -> None:
    assert selecting({REVISION_LABEL: "abc"}) == {ROLE_LABEL: None, REVISION_LABEL: "abc"}
    assert selecting({ROLE_LABEL: "stable"}) == {ROLE_LABEL: "stable", REVISION_LABEL: None}
    assert selecting({}) == {ROLE_LABEL: None, REVISION_LABEL: None}


def deployment(generation: int, observed: int, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "annotations": {REVISION_ANNOTATION: "r1"}},
        "spec": {"replicas": 3},
        "status": {"observedGeneration": observed, **status},
    }


ALL_READY = {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (deployment(2, 2, **ALL_READY), True),
        (deployment(3, 2, **ALL_READY), False),  # the controller has not seen the change
        (deployment(2, 2, **{**ALL_READY, "replicas": 4}), False),  # old pods still there
        (deployment(2, 2, **{**ALL_READY, "availableReplicas": 2}), False),
    ],
)
def test_workload_state(obj: dict[str, Any], ready: bool) -> None:
    state = workload_state(obj)
    assert state is not None
    assert (state.revision, state.replicas, state.ready) == ("r1", 3, ready)


def test_no_deployment_no_state() -> None:
    assert workload_state(None) is None


def test_backend_refs_split_100() -> None:
    refs = backend_refs("s-stable", "s-canary", 80, 30)
    assert [(r["name"], r["weight"]) for r in refs] == [("s-stable", 70), ("s-canary", 30)]


def test_render_query_fills_variables_and_refuses_unknown_ones() -> None:
    query = 'rate(x{ns="{{ namespace }}",svc="{{canaryService}}"}[{{ window }}])'
    variables = {"namespace": "prod", "canaryService": "shop-canary", "window": "30s"}
    assert render_query(query, variables) == 'rate(x{ns="prod",svc="shop-canary"}[30s])'
    with pytest.raises(UnknownVariable, match="stableServce"):
        render_query("{{ stableServce }}", variables)


def test_values_no_data_is_none_and_many_series_is_an_error() -> None:
    assert single_value([]) is None
    assert single_value([{"metric": {}, "value": [1.0, "NaN"]}]) is None
    assert single_value([{"metric": {}, "value": [1.0, "0.25"]}]) == 0.25
    assert math.isinf(single_value([{"metric": {}, "value": [1.0, "+Inf"]}]) or 0)
    with pytest.raises(ValueError, match="2 series"):
        single_value([{"value": [1, "1"]}, {"value": [1, "2"]}])


def test_status_patch_nulls_what_went_away() -> None:
    old = {"phase": "Progressing", "canaryRevision": "abc", "canaryWeight": 30}
    new = {"phase": "Succeeded", "canaryWeight": 0}
    assert status_patch(old, new) == {
        "phase": "Succeeded",
        "canaryWeight": 0,
        "canaryRevision": None,
    }


def test_a_problem_is_reported_once_and_holds_its_transition_time() -> None:
    meta = {"generation": 3}
    problem = ("RoutingFailed", "HTTPRoute prod/shop does not exist")
    healthy = {
        "phase": "Initialized",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Initialized", "message": ""},
            {"type": "Degraded", "status": "False", "reason": "Initialized", "message": ""},
        ],
    }
    reported = with_problem(healthy, problem, "2026-01-01T00:00:00Z", meta, healthy)
    degraded = {c["type"]: c for c in reported["conditions"]}
    assert degraded["Degraded"]["status"] == "True"
    assert degraded["Degraded"]["reason"] == "RoutingFailed"
    assert degraded["Ready"]["status"] == "False"
    assert degraded["Degraded"]["observedGeneration"] == 3
    assert [c["type"] for c in reported["conditions"]] == ["Ready", "Degraded"]

    # Already said: nothing changes.
    assert with_problem(reported, problem, "2026-01-01T00:09:00Z", meta, reported) is reported
    # The engine's fresh status, overlaid again later, equals what is stored: no write.
    again = with_problem(healthy, problem, "2026-01-01T00:09:00Z", meta, reported)
    assert again == reported


def test_prometheus_connections_verify_tls_unless_told_and_stay_few() -> None:
    from tidegate.adapters import prometheus

    prometheus._connections.clear()
    verified = prometheus._connection("https://prom.example:9090", True)
    assert verified._session.verify is not False
    unverified = prometheus._connection("https://prom.example:9090", False)
    assert unverified._session.verify is False
    assert prometheus._connection("https://prom.example:9090", True) is verified
    closed: list[str] = []
    verified._session.close = lambda: closed.append("verified")  # type: ignore[method-assign]
    for n in range(prometheus.MAX_CONNECTIONS):
        prometheus._connection(f"http://prom-{n}.example:9090", True)
    assert len(prometheus._connections) == prometheus.MAX_CONNECTIONS
    assert closed == ["verified"]  # the least recently used, closed as it was dropped
    prometheus._connections.clear()


async def test_a_prometheus_error_of_any_length_is_cut_for_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tidegate import api
    from tidegate.adapters import prometheus

    class Failing:
        url = "http://p:9090"

        def custom_query(self, query: str) -> object:
            raise RuntimeError("x" * 100_000)

    monkeypatch.setattr(prometheus, "_connection", lambda url, verify: Failing())
    metric = api.Metric(name="m", query="up", threshold_range=api.ThresholdRange(max=1))
    measured = await prometheus.measure("http://p:9090", metric, {})
    assert measured.value is None and measured.error is not None
    assert len(measured.error) == prometheus.ERROR_TEXT_LIMIT
    assert measured.error.startswith("RuntimeError: xxx") and measured.error.endswith("…")


class Dripping:
    """urllib3's raw response, as a server that sends `chunks` one read at a time, each read
    taking `seconds` on the clock `now`."""

    def __init__(self, chunks: list[bytes], seconds: float, now: list[float]) -> None:
        self.chunks, self.seconds, self.now = list(chunks), seconds, now

    def read1(self, amt: int, decode_content: bool = True) -> bytes:
        self.now[0] += self.seconds
        return self.chunks.pop(0)[:amt] if self.chunks else b""


def test_an_answer_is_read_within_a_total_deadline_and_a_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tidegate.adapters import prometheus

    now = [0.0]
    monkeypatch.setattr(prometheus.time, "monotonic", lambda: now[0])
    whole = prometheus.read_bounded(Dripping([b'{"a":', b"1}"], 1, now), deadline=10)
    assert whole == b'{"a":1}'
    # A byte a second: every read is quick, the whole is not.
    began = now[0]
    with pytest.raises(prometheus.AnswerRefused, match="no whole answer within 10s"):
        prometheus.read_bounded(Dripping([b"x"] * 100, 1, now), deadline=began + 10)
    assert now[0] == began + 11  # cut at the first read past it
    chunk = b"x" * 65536
    with pytest.raises(prometheus.AnswerRefused, match="larger than 100000 bytes"):
        prometheus.read_bounded(Dripping([chunk] * 10, 0, now), deadline=now[0] + 10, limit=100_000)


async def test_one_host_holds_at_most_its_share_of_the_query_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from tidegate import api
    from tidegate.adapters import prometheus

    release = threading.Event()
    lock = threading.Lock()
    running = {"now": 0, "most": 0}

    class Connection:
        url = "http://slow:9090"

        def custom_query(self, query: str) -> object:
            with lock:
                running["now"] += 1
                running["most"] = max(running["most"], running["now"])
            release.wait(5)
            with lock:
                running["now"] -= 1
            return [{"value": [0, "1"]}]

    class Fast:
        url = "http://fast:9090"

        def custom_query(self, query: str) -> object:
            return [{"value": [0, "2"]}]

    def connection(url: str, verify: bool) -> object:
        return Connection() if "slow" in url else Fast()

    monkeypatch.setattr(prometheus, "_connection", connection)
    monkeypatch.setattr(prometheus, "HOST_THREADS", 3)
    metric = api.Metric(name="m", query="up", threshold_range=api.ThresholdRange(max=1))
    held = asyncio.ensure_future(prometheus.measure_all("http://slow:9090", [metric] * 10, {}))

    for _ in range(50):
        await asyncio.sleep(0.01)
    assert running["most"] == 3
    # Another host is not held up by this one's queries.
    other = await prometheus.measure("http://fast:9090", metric, {})
    assert other.value == 2
    release.set()
    assert [m.value for m in await held] == [1] * 10


async def test_templates_are_read_from_the_cache_by_kind_cluster_ones_without_namespace() -> None:
    namespaced = {"metadata": {"name": "t", "namespace": "ns"}, "spec": {"query": "a"}}
    cluster = {"metadata": {"name": "t"}, "spec": {"query": "b"}}
    cache = Cache(
        {
            "metrictemplates": {("ns", "t"): [trim("metrictemplates", namespaced)]},
            "clustermetrictemplates": {("", "t"): [trim("clustermetrictemplates", cluster)]},
        }
    )
    templates = KubeTemplates(SimpleNamespace(cache=cache))  # type: ignore[arg-type]
    kinds = api.MetricTemplateKind
    assert (await templates.get(kinds.NAMESPACED, "ns", "t")) == namespaced
    assert (await templates.get(kinds.CLUSTER, "ns", "t")) == cluster
    assert (await templates.get(kinds.NAMESPACED, "other", "t")) is None
    assert (await templates.get(kinds.CLUSTER, "ns", "u")) is None


async def test_without_a_cache_templates_are_asked_of_the_api_server() -> None:
    asked: list[tuple[object, ...]] = []

    async def get_or_none(kind: str, namespace: str, name: str) -> dict[str, object] | None:
        asked.append((kind, namespace, name))
        return None

    kube = SimpleNamespace(cache=None, get_or_none=get_or_none)
    templates = KubeTemplates(kube)  # type: ignore[arg-type]
    await templates.get(api.MetricTemplateKind.CLUSTER, "ns", "c")
    await templates.get(api.MetricTemplateKind.NAMESPACED, "ns", "t")
    assert asked == [("clustermetrictemplates", "", "c"), ("metrictemplates", "ns", "t")]


async def test_a_services_endpoints_are_read_from_all_its_endpointslices() -> None:
    from tidegate.adapters.kube import Kube

    def endpointslice(name: str, *pods: tuple[str, bool | None]) -> dict[str, object]:
        return {
            "metadata": {"name": name, "namespace": "ns", "labels": {"x": "y"}},
            "endpoints": [
                {
                    "addresses": ["10.0.0.1"],
                    "targetRef": {"kind": "Pod", "name": pod},
                    "conditions": {} if ready is None else {"ready": ready},
                }
                for pod, ready in pods
            ],
        }

    first = endpointslice("shop-a", ("shop-v1-h-1", True), ("shop-v1-h-2", False))
    second = endpointslice("shop-b", ("shop-v2-h-3", None))
    trimmed = trim("endpointslices", first)
    # Which pod, and whether it takes requests (ready unless said otherwise): nothing more.
    assert trimmed == {
        "metadata": {"name": "shop-a", "namespace": "ns"},
        "endpoints": [
            {"pod": "shop-v1-h-1", "ready": True},
            {"pod": "shop-v1-h-2", "ready": False},
        ],
    }
    cache = Cache({"endpointslices": {("ns", "shop"): [trimmed, trim("endpointslices", second)]}})
    kube = Kube.__new__(Kube)
    kube.cache = cache
    assert await kube.endpoints("ns", "shop") == [
        {"pod": "shop-v1-h-1", "ready": True},
        {"pod": "shop-v1-h-2", "ready": False},
        {"pod": "shop-v2-h-3", "ready": True},
    ]
    assert await kube.endpoints("ns", "other") == []
