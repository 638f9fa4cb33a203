"""Metrics from MetricTemplates and ClusterMetricTemplates: the reconciler resolves them from
the cache before it measures, and a template it cannot use holds the rollout, Degraded."""

from __future__ import annotations

from types import SimpleNamespace

import kopf
import pytest
from fakes import NAME, NAMESPACE, World, example_spec
from test_handlers import KEY, looping
from test_reconciler import reconciler, settle

from tidegate import api, handlers
from tidegate.reconciler import backoff

CLUSTER = api.MetricTemplateKind.CLUSTER
ERROR_RATE = (
    'sum(rate(x{ns="{{ args.namespace }}",backend="{{ args.backend }}",code=~"{{ args.codes }}"}'
    "[{{ window }}]))"
)


def template_world(metrics: list[dict[str, object]] | None = None) -> World:
    """The canary example with its metrics from templates (both kinds), as in
    examples/metric-templates."""
    spec = example_spec()
    spec["analysis"]["metrics"] = metrics or [
        {
            "name": "error-rate",
            "templateRef": {"name": "error-rate", "kind": "ClusterMetricTemplate"},
            "args": [{"name": "backend", "value": "{{ canaryService }}"}],
        },
        {
            "name": "latency",
            "templateRef": {"name": "latency"},
            "args": [{"name": "backend", "value": "{{ canaryService }}"}],
            "thresholdRange": {"max": 0.5},
        },
    ]
    world = World()
    world.add_target()
    world.add_rollout(spec)
    world.add_template(
        "error-rate",
        ERROR_RATE,
        [{"name": "backend"}, {"name": "namespace", "value": "{{ namespace }}"},
         {"name": "codes", "value": "5.."}],
        {"max": 0.05},
        kind=CLUSTER,
    )  # fmt: skip
    world.add_template("latency", 'p99{b="{{ args.backend }}"}', [{"name": "backend"}], {"max": 1})
    return world


async def test_template_metrics_are_measured_as_resolved_queries_and_promoted() -> None:
    world = template_world()
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"})
    assert world.queries, "nothing was measured"
    for asked in world.queries:
        query, bounds = asked["error-rate"]
        assert query is not None and query.startswith(
            f'sum(rate(x{{ns="{NAMESPACE}",backend="shop-canary",code=~"5.."}}['
        )
        assert "{{" not in query
        assert bounds == api.ThresholdRange(max=0.05)  # the template's
        assert asked["latency"] == ('p99{b="shop-canary"}', api.ThresholdRange(max=0.5))
    # Read from the cache at each measurement, by kind and (for a MetricTemplate) namespace.
    gets = {c[1:] for c in world.calls if c[0] == "get_template"}
    assert gets == {
        ("ClusterMetricTemplate", NAMESPACE, "error-rate"),
        ("MetricTemplate", NAMESPACE, "latency"),
    }
    assert world.condition("Degraded")["status"] == "False"  # type: ignore[index]


async def test_a_failing_template_metric_rolls_back_on_the_templates_bounds() -> None:
    world = template_world()
    await settle(world, {"Initialized"})
    world.metric_value = 0.1  # over the template's 0.05, within the latency's 0.5
    world.set_version("1.2.0")
    await settle(world, {"Failed"})
    assert world.canary_weight == 0
    assert 'metric "error-rate" value 0.1 outside [-inf, 0.05]' in world.status["message"]


async def test_a_missing_template_holds_the_rollout_degraded_without_measuring() -> None:
    world = template_world()
    del world.templates[(CLUSTER, "", "error-rate")]
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)  # nothing measured before a rollout
    world.set_version("1.1.0")
    world.calls.clear()
    delays = []
    for _ in range(8):
        delays.append(await rec.reconcile(NAMESPACE, NAME))
        world.advance(delays[-1] or 60)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["reason"] == "TemplateNotFound"
    assert degraded["message"] == (
        'spec.analysis.metrics[0] (metric "error-rate"): '
        "ClusterMetricTemplate error-rate does not exist"
    )
    assert [r for t, r, _ in world.events() if t == "Warning"] == ["TemplateNotFound"]  # once
    assert "measure_all" not in world.names()
    assert world.status["phase"] == "Progressing" and world.canary_weight == 10
    assert not world.status.get("metrics")  # no result: never measured
    assert delays[-1] is not None and delays[-1] > backoff(1)  # backing off meanwhile
    # The template appears: the next reconcile measures, and the rollout goes on.
    world.add_template(
        "error-rate", ERROR_RATE, [{"name": "backend"}, {"name": "namespace"},
                                   {"name": "codes"}], {"max": 0.05}, kind=CLUSTER,
    )  # fmt: skip
    # A metric now missing arguments is its own problem, named as such.
    await rec.reconcile(NAMESPACE, NAME)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert 'needs a value for argument "namespace", "codes"' in degraded["message"]
    assert "measure_all" not in world.names()
    world.add_template(
        "error-rate", ERROR_RATE, [{"name": "backend"}, {"name": "namespace", "value": "n"},
                                   {"name": "codes", "value": "5.."}], {"max": 0.05}, kind=CLUSTER,
    )  # fmt: skip
    await settle(world, {"Succeeded"}, rec)
    assert world.condition("Degraded")["status"] == "False"  # type: ignore[index]
    assert [r for t, r, _ in world.events() if t == "Warning"] == [
        "TemplateNotFound",
        "InvalidSpec",
    ]


async def test_a_template_without_bounds_for_a_metric_without_bounds_is_refused() -> None:
    world = template_world([{"name": "m", "templateRef": {"name": "bare"}}])
    world.add_template("bare", "up", [])
    await settle(world, {"Initialized"})
    world.set_version("1.1.0")
    rec = reconciler(world)
    for _ in range(4):
        world.advance((await rec.reconcile(NAMESPACE, NAME)) or 60)
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "InvalidSpec"
    assert (
        "neither the metric nor MetricTemplate shop-ns/bare sets a thresholdRange"
        in (degraded["message"])
    )
    assert "measure_all" not in world.names()


async def test_without_a_prometheus_address_templates_are_still_resolved_first() -> None:
    world = template_world()
    del world.templates[(CLUSTER, "", "error-rate")]
    rec = reconciler(world, prometheus=None)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    for _ in range(4):
        world.advance((await rec.reconcile(NAMESPACE, NAME)) or 60)
    assert world.condition("Degraded")["reason"] == "TemplateNotFound"  # type: ignore[index]
    assert world.status["phase"] == "Progressing"


def test_the_template_index_maps_each_named_template_to_the_rollout() -> None:
    spec = {
        "analysis": {
            "metrics": [
                {"name": "a", "templateRef": {"name": "t"}},
                {"name": "b", "templateRef": {"name": "c", "kind": "ClusterMetricTemplate"}},
                {"name": "c", "query": "up"},
                {"name": "d", "templateRef": {}},
            ]
        }
    }
    found = handlers.rollouts_by_template(namespace="ns", name="r", spec=spec)  # type: ignore[arg-type]
    assert found == {
        ("MetricTemplate", "ns", "t"): ("ns", "r"),
        ("ClusterMetricTemplate", "", "c"): ("ns", "r"),
    }
    assert handlers.rollouts_by_template(namespace="ns", name="r", spec={}) == {}  # type: ignore[arg-type]


def test_the_template_indices_keep_the_spec_cluster_ones_under_no_namespace() -> None:
    body = kopf.Body({"metadata": {"name": "t", "namespace": "ns"}, "spec": {"query": "up"}})
    assert handlers.metrictemplates(namespace="ns", name="t", body=body) == {
        ("ns", "t"): {"metadata": {"name": "t", "namespace": "ns"}, "spec": {"query": "up"}}
    }
    cluster = kopf.Body({"metadata": {"name": "c"}, "spec": {"query": "up"}})
    assert handlers.clustermetrictemplates(namespace=None, name="c", body=cluster) == {
        ("", "c"): {"metadata": {"name": "c"}, "spec": {"query": "up"}}
    }


@pytest.mark.looptime
async def test_template_events_wake_the_rollouts_that_use_them() -> None:
    world = template_world()
    rollouts, recorded = looping(world)
    memo = SimpleNamespace(rollouts=rollouts)
    rollouts.ensure_running(KEY)
    await recorded.wait_for(lambda: world.status.get("phase") == "Initialized", timeout=60)
    index = {
        ("MetricTemplate", NAMESPACE, "latency"): [KEY],
        ("ClusterMetricTemplate", "", "error-rate"): [KEY],
    }
    for handler, name, wakes in (
        (handlers.template_changed, "other", False),
        (handlers.template_changed, "latency", True),
        (handlers.cluster_template_changed, "latency", False),
        (handlers.cluster_template_changed, "error-rate", True),
    ):
        seen = len(recorded.times)
        await handler(  # type: ignore[operator]
            namespace=None if handler is handlers.cluster_template_changed else NAMESPACE,
            name=name,
            memo=memo,
            rollouts_by_template=index,
        )
        if wakes:
            await recorded.wait_for(lambda seen=seen: len(recorded.times) > seen, timeout=1)  # type: ignore[misc]
        else:
            with pytest.raises(TimeoutError):
                await recorded.wait_for(lambda seen=seen: len(recorded.times) > seen, timeout=1)  # type: ignore[misc]
    await rollouts.stop_all()
