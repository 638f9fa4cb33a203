"""Metric templates: the models, and resolution (template + arguments + the rollout's
variables -> a query and its bounds), case by case."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tidegate import api
from tidegate.adapters.prometheus import measure
from tidegate.analysis import Measurement, judge
from tidegate.templates import (
    TemplateProblem,
    UnknownVariable,
    describe_ref,
    placeholders,
    render,
    resolve,
)

NS = "shop-ns"
FIELD = "spec.analysis.metrics[0]"
VARIABLES = {
    "target": "shop",
    "namespace": NS,
    "stableService": "shop-stable",
    "canaryService": "shop-canary",
    "interval": "30s",
    "window": "47s",
}
ERROR_RATE = (
    'sum(rate(http_requests_total{service="{{ args.service }}",code=~"{{ args.codes }}"}'
    '[{{ window }}])) / sum(rate(http_requests_total{service="{{ args.service }}"}[{{ window }}]))'
)


def template(
    query: str = ERROR_RATE,
    args: list[dict[str, Any]] | None = None,
    threshold_range: dict[str, float] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"query": query}
    spec["args"] = (
        args if args is not None else [{"name": "service"}, {"name": "codes", "value": "5.."}]
    )
    if threshold_range is not None:
        spec["thresholdRange"] = threshold_range
    return {"apiVersion": api.API_VERSION, "kind": "MetricTemplate", "spec": spec}


def metric(**fields: Any) -> api.Metric:
    wire: dict[str, Any] = {"name": "error-rate", "templateRef": {"name": "error-rate"}}
    wire.update(fields)
    return api.Metric.model_validate(wire)


def problem(
    found: api.Metric, stored: dict[str, Any] | None, variables: dict[str, str] = VARIABLES
) -> TemplateProblem:
    with pytest.raises(TemplateProblem) as caught:
        resolve(found, stored, variables, namespace=NS, field=FIELD)
    return caught.value


# --- rendering -------------------------------------------------------------------------------


def test_render_fills_every_placeholder_whatever_its_spacing() -> None:
    text = "{{target}} {{ namespace }} {{   args.x   }}"
    assert render(text, {"target": "a", "namespace": "b", "args.x": "c"}) == "a b c"


def test_render_is_one_pass_so_a_value_is_never_read_as_a_placeholder() -> None:
    assert render("{{ a }}", {"a": "{{ b }}", "b": "no"}) == "{{ b }}"


def test_render_refuses_an_unknown_name_and_lists_the_known_ones() -> None:
    with pytest.raises(UnknownVariable, match=r"\{\{ args.y \}\}; known: args.x, target"):
        render("{{ args.y }}", {"target": "a", "args.x": "b"})
    with pytest.raises(UnknownVariable, match="known: none"):
        render("{{ a }}", {})


def test_placeholders_in_order_each_once() -> None:
    assert placeholders("{{ b }} {{ args.a }} {{b}}") == ["b", "args.a"]


def test_describe_ref_names_the_namespace_of_a_metric_template_only() -> None:
    assert describe_ref(api.TemplateRef(name="t"), NS) == f"MetricTemplate {NS}/t"
    cluster = api.TemplateRef(name="t", kind=api.MetricTemplateKind.CLUSTER)
    assert describe_ref(cluster, NS) == "ClusterMetricTemplate t"


# --- resolution ------------------------------------------------------------------------------


def test_an_inline_metric_is_returned_as_it_is() -> None:
    inline = api.Metric.model_validate(
        {"name": "m", "query": "up{x='{{ canaryService }}'}", "thresholdRange": {"max": 1}}
    )
    assert resolve(inline, None, VARIABLES, namespace=NS, field=FIELD) is inline


def test_arguments_defaults_and_variables_make_the_query() -> None:
    found = metric(
        args=[{"name": "service", "value": "{{ canaryService }}"}], thresholdRange={"max": 0.05}
    )
    resolved = resolve(found, template(), VARIABLES, namespace=NS, field=FIELD)
    assert resolved.query == (
        'sum(rate(http_requests_total{service="shop-canary",code=~"5.."}[47s])) / '
        'sum(rate(http_requests_total{service="shop-canary"}[47s]))'
    )
    assert resolved.template_ref is None and resolved.args is None
    assert resolved.threshold_range == api.ThresholdRange(max=0.05)
    assert resolved.name == "error-rate"


def test_a_given_value_replaces_the_default() -> None:
    found = metric(args=[{"name": "service", "value": "s"}, {"name": "codes", "value": "4.."}])
    stored = template(threshold_range={"max": 1})
    assert 'code=~"4.."' in str(resolve(found, stored, VARIABLES, namespace=NS, field=FIELD).query)


def test_a_default_may_use_the_rollouts_variables() -> None:
    stored = template(
        query="up{service='{{ args.service }}'}",
        args=[{"name": "service", "value": "{{ stableService }}"}],
        threshold_range={"min": 1},
    )
    resolved = resolve(metric(), stored, VARIABLES, namespace=NS, field=FIELD)
    assert resolved.query == "up{service='shop-stable'}"


def test_an_argument_value_is_not_read_again_once_filled_in() -> None:
    # A value may hold text that looks like a placeholder only through a variable; here a
    # rendered value is put in as it is, even with braces in it.
    stored = template(
        query="x{l=~'{{ args.re }}'}", args=[{"name": "re"}], threshold_range={"max": 1}
    )
    resolved = resolve(
        metric(args=[{"name": "re", "value": "a{2}"}]), stored, VARIABLES, namespace=NS, field=FIELD
    )
    assert resolved.query == "x{l=~'a{2}'}"


def test_the_metrics_own_threshold_range_replaces_the_templates() -> None:
    stored = template(threshold_range={"max": 0.1})
    given = [{"name": "service", "value": "s"}]
    own = resolve(
        metric(args=given, thresholdRange={"min": 0, "max": 0.01}),
        stored,
        VARIABLES,
        namespace=NS,
        field=FIELD,
    )
    assert own.threshold_range == api.ThresholdRange(min=0, max=0.01)
    inherited = resolve(metric(args=given), stored, VARIABLES, namespace=NS, field=FIELD)
    assert inherited.threshold_range == api.ThresholdRange(max=0.1)


def test_a_missing_template_is_named() -> None:
    found = problem(metric(), None)
    assert found.reason == "TemplateNotFound"
    assert (
        str(found)
        == f'{FIELD} (metric "error-rate"): MetricTemplate {NS}/error-rate does not exist'
    )
    cluster = metric(templateRef={"name": "rates", "kind": "ClusterMetricTemplate"})
    assert "ClusterMetricTemplate rates does not exist" in str(problem(cluster, None))


def test_a_required_argument_without_a_value_is_named() -> None:
    found = problem(metric(thresholdRange={"max": 1}), template())
    assert found.reason == "InvalidSpec"
    assert 'needs a value for argument "service", which has no default' in str(found)
    assert f"set it in {FIELD}.args" in str(found)


def test_an_argument_the_template_does_not_have_is_refused() -> None:
    given = [{"name": "service", "value": "s"}, {"name": "servcie", "value": "t"}]
    found = problem(metric(args=given, thresholdRange={"max": 1}), template())
    assert found.reason == "InvalidSpec"
    assert 'has no argument "servcie" (its arguments: "service", "codes")' in str(found)


def test_an_argument_value_with_an_unknown_variable_is_refused() -> None:
    given = [{"name": "service", "value": "{{ canarySvc }}"}]
    found = problem(metric(args=given, thresholdRange={"max": 1}), template())
    assert found.reason == "InvalidSpec"
    assert "args service: unknown variable {{ canarySvc }}" in str(found)
    # A default too, and it says the default is at fault.
    stored = template(args=[{"name": "service", "value": "{{ nope }}"}, {"name": "codes"}])
    found = problem(
        metric(args=[{"name": "codes", "value": "5.."}], thresholdRange={"max": 1}), stored
    )
    assert "default for service: unknown variable {{ nope }}" in str(found)


def test_an_argument_may_not_use_other_arguments() -> None:
    stored = template(args=[{"name": "service"}, {"name": "codes", "value": "{{ args.service }}"}])
    found = problem(
        metric(args=[{"name": "service", "value": "s"}], thresholdRange={"max": 1}), stored
    )
    assert found.reason == "InvalidSpec"
    assert "unknown variable {{ args.service }}" in str(found)


def test_a_template_query_with_an_undeclared_argument_or_unknown_variable_is_invalid() -> None:
    stored = template(
        query="{{ args.service }} {{ args.other }}", args=[{"name": "service", "value": "s"}]
    )
    found = problem(metric(thresholdRange={"max": 1}), stored)
    assert found.reason == "InvalidTemplate"
    assert 'its query uses argument "other", not in its spec.args' in str(found)
    stored = template(query="{{ canarySvc }}", args=[])
    found = problem(metric(thresholdRange={"max": 1}), stored)
    assert found.reason == "InvalidTemplate"
    assert "its query: unknown variable {{ canarySvc }}" in str(found)


def test_no_threshold_range_anywhere_is_refused() -> None:
    found = problem(metric(args=[{"name": "service", "value": "s"}]), template())
    assert found.reason == "InvalidSpec"
    assert f"neither the metric nor MetricTemplate {NS}/error-rate sets a thresholdRange" in str(
        found
    )


def test_a_stored_template_that_does_not_parse_is_invalid() -> None:
    found = problem(
        metric(thresholdRange={"max": 1}), {"spec": {"query": "", "args": [{"name": "a b"}]}}
    )
    assert found.reason == "InvalidTemplate"
    assert f"MetricTemplate {NS}/error-rate is invalid: spec.query:" in str(found)
    assert "spec.args[0].name" in str(found)
    assert problem(metric(thresholdRange={"max": 1}), {}).reason == "InvalidTemplate"


# --- the models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (
            {"name": "m", "thresholdRange": {"max": 1}},
            r"exactly one of query or templateRef \(found neither\)",
        ),
        (
            {"name": "m", "query": "q", "templateRef": {"name": "t"}, "thresholdRange": {"max": 1}},
            r"exactly one of query or templateRef \(found both\)",
        ),
        ({"name": "m", "query": "q"}, "a metric with a query needs a thresholdRange"),
        (
            {"name": "m", "query": "q", "thresholdRange": {"max": 1}, "args": []},
            "args need a templateRef",
        ),
        (
            {
                "name": "m",
                "templateRef": {"name": "t"},
                "args": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}],
            },
            "argument 'a' is given more than once",
        ),
        (
            {"name": "m", "templateRef": {"name": "t", "kind": "Template"}},
            "'MetricTemplate' or 'ClusterMetricTemplate'",
        ),
        (
            {"name": "m", "templateRef": {"name": "t"}, "args": [{"name": "a-b", "value": "1"}]},
            "should match pattern",
        ),
        ({"name": "m", "templateRef": {"name": "t"}, "args": [{"name": "a"}]}, "Field required"),
    ],
)
def test_bad_metrics_are_refused_readably(wire: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        api.Metric.model_validate(wire)


def test_template_ref_kind_defaults_to_the_namespaced_template() -> None:
    found = metric()
    assert found.template_ref == api.TemplateRef(
        name="error-rate", kind=api.MetricTemplateKind.NAMESPACED
    )
    assert found.threshold_range is None


def test_template_spec_refuses_repeated_arguments_and_keeps_optional_values() -> None:
    with pytest.raises(ValidationError, match="argument 'a' is given more than once"):
        api.MetricTemplateSpec.model_validate(
            {"query": "q", "args": [{"name": "a"}, {"name": "a"}]}
        )
    spec = api.MetricTemplateSpec.model_validate({"query": "q", "args": [{"name": "a"}]})
    assert spec.args == [api.TemplateArg(name="a")] and spec.threshold_range is None
    assert api.MetricTemplateSpec.model_validate({"query": "q"}).args == []


# --- what the engine and the metrics port make of an unresolved metric ----------------------


def test_an_unresolved_metric_is_never_judged_a_pass() -> None:
    verdict = judge(metric(), Measurement("error-rate", 0.0), datetime(2026, 1, 1, tzinfo=UTC))
    assert not verdict.passed
    assert verdict.result.phase is api.MetricPhase.ERROR
    assert verdict.result.message == 'metric "error-rate" has no thresholdRange'


async def test_an_unresolved_metric_is_never_sent_to_prometheus() -> None:
    found = await measure("http://prometheus.invalid:9090", metric(), VARIABLES)
    assert found.value is None
    assert found.error == "ValueError: metric 'error-rate' has no query: its template is unresolved"
