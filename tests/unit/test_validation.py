from typing import Any

from tidegate.adapters.wiring import ROUTER_CAPABILITIES, ROUTERS, router_capabilities
from tidegate.validation import spec_problems, template_problems


def spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "targetRef": {"name": "app"},
        "service": {"name": "app", "port": 80},
        "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "app"}},
    }
    data.update(overrides)
    return data


def test_a_valid_spec_has_no_problem() -> None:
    parsed, problems = spec_problems(spec(), router_capabilities)
    assert parsed is not None and problems == []


def test_model_errors_name_the_field_path_as_written() -> None:
    bad = spec(strategy={"canary": {"steps": [{"setWeight": 20}, {"setWeight": 150}]}})
    parsed, problems = spec_problems(bad, router_capabilities)
    assert parsed is None
    assert [p.path for p in problems] == ["spec.strategy.canary.steps[1].setWeight"]
    assert "100" in problems[0].message


def test_a_route_the_router_cannot_carry_names_the_step() -> None:
    mirror = {"setMirrorRoute": {"percentage": 10}}
    bad = spec(
        strategy={"canary": {"steps": [{"setWeight": 10}, mirror]}},
        trafficRouting={"service": {}},
    )
    _, problems = spec_problems(bad, router_capabilities)
    paths = {p.path for p in problems}
    assert "spec.strategy.canary.steps[1].setMirrorRoute" in paths
    assert "spec.strategy.canary" in paths  # weights: a Service selector only switches


def test_every_router_has_its_capabilities_known_offline() -> None:
    assert set(ROUTER_CAPABILITIES) == set(ROUTERS)


# --- metric templates ------------------------------------------------------------------------


def test_a_template_argument_may_use_only_the_rollouts_variables() -> None:
    metrics = [
        {
            "name": "m",
            "templateRef": {"name": "t", "kind": "ClusterMetricTemplate"},
            "args": [
                {"name": "ok", "value": "{{ canaryService }}-{{ namespace }}"},
                {"name": "bad", "value": "{{ canarySvc }} {{ args.ok }}"},
            ],
        }
    ]
    parsed, problems = spec_problems(spec(analysis={"metrics": metrics}), router_capabilities)
    assert parsed is not None
    assert [str(p).split(";")[0] for p in problems] == [
        "spec.analysis.metrics[0].args[1].value: unknown variable {{ canarySvc }}",
        "spec.analysis.metrics[0].args[1].value: unknown variable {{ args.ok }}",
    ]


def test_a_metric_with_both_or_neither_source_names_the_metric() -> None:
    metrics = [{"name": "m", "query": "up", "templateRef": {"name": "t"}}, {"name": "n"}]
    parsed, problems = spec_problems(spec(analysis={"metrics": metrics}), router_capabilities)
    assert parsed is None
    assert [p.path for p in problems] == ["spec.analysis.metrics[0]", "spec.analysis.metrics[1]"]
    assert "found both" in problems[0].message and "found neither" in problems[1].message


def test_a_templates_placeholders_are_its_arguments_and_the_rollouts_variables() -> None:
    good = {
        "query": "x{a='{{ args.a }}', b='{{ args.b }}', s='{{ canaryService }}'}[{{ window }}]",
        "args": [{"name": "a"}, {"name": "b", "value": "{{ namespace }}"}],
        "thresholdRange": {"max": 1},
    }
    assert template_problems(good) == []
    bad = {
        "query": "{{ args.a }} {{ args.c }} {{ canarySvc }}",
        "args": [{"name": "a", "value": "{{ args.a }}"}],
    }
    assert [str(p) for p in template_problems(bad)] == [
        "spec.query: unknown variable {{ args.c }}: not a rollout variable nor in args",
        "spec.query: unknown variable {{ canarySvc }}: not a rollout variable nor in args",
        "spec.args[0].value: unknown variable {{ args.a }}",
    ]
    assert [p.path for p in template_problems({"args": [{"name": "x y"}]})] == [
        "spec.query",
        "spec.args[0].name",
    ]
    assert [p.path for p in template_problems(None)] == ["spec.query"]


def test_pod_ratio_carries_a_canarys_weights_and_nothing_else() -> None:
    ratio = {"podRatio": {}}
    parsed, problems = spec_problems(spec(trafficRouting=ratio), router_capabilities)
    assert parsed is not None and problems == []
    header = {"setHeaderRoute": {"match": [{"headerName": "X", "headerValue": {"exact": "1"}}]}}
    bad = spec(strategy={"canary": {"steps": [{"setWeight": 10}, header]}}, trafficRouting=ratio)
    _, problems = spec_problems(bad, router_capabilities)
    assert [p.path for p in problems] == ["spec.strategy.canary.steps[1].setHeaderRoute"]
    assert "spec.trafficRouting.podRatio cannot carry 'header'" in problems[0].message
    blue_green = spec(strategy={"blueGreen": {}}, trafficRouting=ratio)
    _, problems = spec_problems(blue_green, router_capabilities)
    assert [p.message for p in problems] == [
        "the router spec.trafficRouting.podRatio cannot carry 'switch' routes"
    ]


def test_pod_ratio_with_an_autoscaler_is_refused() -> None:
    bad = spec(trafficRouting={"podRatio": {}}, autoscalerRef={"name": "app"})
    _, problems = spec_problems(bad, router_capabilities)
    assert [p.path for p in problems] == ["spec.autoscalerRef"]
    assert "cannot be used with an autoscaler" in problems[0].message
