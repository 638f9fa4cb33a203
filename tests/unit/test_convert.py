"""`kubectl tidegate convert`: the benchmark's Flagger and Argo Rollouts manifests become
rollouts that ask for the same work as its tidegate one, and what has no counterpart is
named in a TODO."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

import scenario
from scenario import ARGO, FLAGGER, SCENARIO, TIDEGATE, objects

from tidegate import api
from tidegate.plugin import cli, convert, lint

NAMESPACE = "shop-ns"
PROMETHEUS = "http://prometheus.monitoring:9090"


def converted(*documents: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    text = convert.convert_text([yaml.safe_dump_all(documents)])
    return text, [d for d in yaml.safe_load_all(text) if d]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def rollout_of(documents: list[dict[str, Any]]) -> api.RolloutSpec:
    (found,) = of_kind(documents, api.KIND)
    return api.ProgressiveRollout.model_validate(found).spec


def native() -> api.RolloutSpec:
    (found,) = of_kind(objects(TIDEGATE, SCENARIO, NAMESPACE, PROMETHEUS), api.KIND)
    return api.ProgressiveRollout.model_validate(found).spec


def template_query(documents: list[dict[str, Any]], metric: api.Metric) -> api.MetricTemplate:
    assert metric.template_ref is not None
    (found,) = [
        d
        for d in of_kind(documents, "MetricTemplate")
        if d["metadata"]["name"] == metric.template_ref.name
    ]
    return api.MetricTemplate.model_validate(found)


def lint_problems(documents: list[dict[str, Any]]) -> list[str]:
    return [str(p) for d in documents for p in lint.document_problems(d)]


def test_flagger_canary_becomes_the_native_rollout() -> None:
    text, documents = converted(*objects(FLAGGER, SCENARIO, NAMESPACE, PROMETHEUS))
    spec, want = rollout_of(documents), native()
    assert spec.strategy == want.strategy  # the same steps: setWeight 20, then 50
    assert spec.analysis.interval == want.analysis.interval
    assert spec.analysis.failure_limit == want.analysis.failure_limit
    assert spec.progress_deadline_seconds == want.progress_deadline_seconds
    assert (spec.target_ref, spec.service, spec.traffic_routing) == (
        want.target_ref,
        want.service,
        want.traffic_routing,
    )
    (metric,) = spec.analysis.metrics
    (wanted,) = want.analysis.metrics
    assert metric.threshold_range == wanted.threshold_range
    # The template's query, in tidegate's variables, is the native rollout's query.
    template = template_query(documents, metric)
    assert template.spec.query == wanted.query
    assert template.spec.args == []
    # The HTTPRoute Flagger would have made, on the user's Service.
    (route,) = of_kind(documents, "HTTPRoute")
    assert route["spec"]["hostnames"] == [SCENARIO.host(NAMESPACE)]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "shop", "port": 80}]
    assert lint_problems(documents) == []
    # Prometheus' address has no place on a template: said, naming the field.
    assert "# TODO: spec.provider.address: " + PROMETHEUS in text
    assert "# Not converted, kept as it is: apps/v1 Deployment shop-ns/shop" in text


def test_argo_rollout_becomes_a_deployment_and_the_native_rollout() -> None:
    text, documents = converted(*objects(ARGO, SCENARIO, NAMESPACE, PROMETHEUS))
    spec, want = rollout_of(documents), native()
    # setWeight, pause for one interval, under background analysis: a weight step measured
    # once, as tidegate's setWeight is.
    assert spec.strategy == want.strategy
    assert spec.analysis.interval == want.analysis.interval
    # Argo fails past failureLimit 0; tidegate at failureLimit 1.
    assert spec.analysis.failure_limit == want.analysis.failure_limit
    assert spec.progress_deadline_seconds == want.progress_deadline_seconds
    (metric,) = spec.analysis.metrics
    template = template_query(documents, metric)
    assert template.spec.threshold_range == want.analysis.metrics[0].threshold_range
    # The query is Argo's own (the app's counter by pod-template hash, as the benchmark
    # asks Argo), its arguments renamed as tidegate spells them.
    argo_query = scenario.canary_query(ARGO, SCENARIO)
    assert template.spec.query == argo_query.replace(
        "{{ args.canary-hash }}", "{{ args.canary_hash }}"
    )
    assert metric.args == [api.MetricArg(name="namespace", value=NAMESPACE)]
    # The pod template's hash has no counterpart: named, and left unset.
    assert "# TODO: spec.strategy.canary.analysis.args.canary-hash.valueFrom" in text
    (deployment,) = of_kind(documents, "Deployment")
    (argo_rollout,) = [
        o for o in objects(ARGO, SCENARIO, NAMESPACE, PROMETHEUS) if o["kind"] == "Rollout"
    ]
    for key in ("replicas", "selector", "template"):
        assert deployment["spec"][key] == argo_rollout["spec"][key]
    assert deployment["metadata"] == {"name": "shop", "namespace": NAMESPACE}
    assert lint_problems(documents) == []


def test_longer_pauses_under_background_analysis_become_measurements() -> None:
    documents = objects(ARGO, SCENARIO, NAMESPACE, PROMETHEUS)
    rollout = next(d for d in documents if d["kind"] == "Rollout")
    rollout["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {"pause": {"duration": "35s"}},  # 4 intervals of 10 s: 1 + 3 measurements
        {"pause": {}},
        {"setWeight": 50},
    ]
    spec = rollout_of(converted(*documents)[1])
    assert spec.strategy.canary is not None
    assert [
        s.model_dump(by_alias=True, exclude_none=True) for s in spec.strategy.canary.steps or []
    ] == [
        {"setWeight": 20},
        {"analysis": {"iterations": 3}},
        {"pause": {}},
        {"setWeight": 50},
    ]


def test_without_background_analysis_a_pause_stays_a_pause() -> None:
    documents = objects(ARGO, SCENARIO, NAMESPACE, PROMETHEUS)
    rollout = next(d for d in documents if d["kind"] == "Rollout")
    del rollout["spec"]["strategy"]["canary"]["analysis"]
    spec = rollout_of(converted(*documents)[1])
    assert spec.strategy.canary is not None
    steps = [
        s.model_dump(by_alias=True, exclude_none=True) for s in spec.strategy.canary.steps or []
    ]
    assert steps == [
        {"setWeight": 20},
        {"pause": {"duration": "10s"}},
        {"setWeight": 50},
        {"pause": {"duration": "10s"}},
    ]


def flagger_canary(**analysis: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "service": {"port": 8080, "gatewayRefs": [{"name": "public"}], "retries": {}},
            "analysis": {"interval": "30s", "threshold": 3, **analysis},
        },
    }


def test_what_has_no_counterpart_is_a_todo_naming_the_field() -> None:
    canary = flagger_canary(
        stepWeight=10,
        maxWeight=40,
        stepWeightPromotion=20,
        alerts=[{"name": "on-call"}],
        metrics=[
            {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
            {"name": "errors", "templateRef": {"name": "errors"}, "thresholdRange": {"max": 1}},
        ],
        webhooks=[
            {"name": "gate", "type": "confirm-rollout", "url": "http://gate/"},
            {"name": "smoke", "type": "pre-rollout", "url": "http://smoke/", "timeout": "1m"},
            {"name": "load", "url": "http://loadtester/", "metadata": {"cmd": "hey"}},
        ],
    )
    canary["spec"]["sessionAffinity"] = {"cookieName": "x"}
    template = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "errors", "namespace": "ns"},
        "spec": {
            "provider": {"type": "prometheus", "secretRef": {"name": "auth"}},
            "query": 'sum(rate(x{pod=~"{{ target }}-[0-9a-z]+", svc="{{ name }}", '
            'team="{{ variables.team }}"}[{{ interval }}]))',
        },
    }
    text, documents = converted(canary, template)
    todos = [line for line in text.splitlines() if line.startswith("# TODO: ")]
    named = {line.removeprefix("# TODO: ").split(":")[0] for line in todos}
    assert {
        "spec.analysis.stepWeightPromotion",
        "spec.analysis.alerts",
        "spec.sessionAffinity",
        "spec.service.retries",
        "spec.analysis.metrics[0] (request-success-rate)",
        "spec.analysis.webhooks[0].type",
        "spec.provider.secretRef",
        "spec.query {{ name }}",
    } <= named, todos
    spec = rollout_of(documents)
    assert spec.strategy.canary is not None
    assert (spec.strategy.canary.step_weight, spec.strategy.canary.max_weight) == (10, 40)
    assert [m.name for m in spec.analysis.metrics] == ["errors"]
    assert [(w.name, w.type.value, w.timeout) for w in spec.webhooks] == [
        ("smoke", "preRollout", "1m"),
        ("load", "rollout", "10s"),  # Flagger's default type
    ]
    (made,) = of_kind(documents, "MetricTemplate")
    assert made["spec"]["query"] == (
        'sum(rate(x{pod=~"{{ target }}-[0-9a-z]+", svc="{{ args.name }}", '
        'team="{{ args.team }}"}[{{ interval }}]))'
    )
    assert lint_problems(documents) == []


def test_flagger_ab_testing_and_blue_green() -> None:
    ab = flagger_canary(
        iterations=5,
        match=[{"headers": {"x-canary": {"exact": "insider"}, "user-agent": {"prefix": "Fire"}}}],
    )
    spec = rollout_of(converted(ab)[1])
    assert spec.strategy.canary is not None
    steps = [
        s.model_dump(by_alias=True, exclude_none=True) for s in spec.strategy.canary.steps or []
    ]
    assert steps == [
        {
            "setHeaderRoute": {
                "match": [
                    # (yaml.safe_dump sorted the headers)
                    {"headerName": "user-agent", "headerValue": {"regex": "^Fire"}},
                    {"headerName": "x-canary", "headerValue": {"exact": "insider"}},
                ]
            }
        },
        {"analysis": {"iterations": 5}},
    ]
    blue_green = rollout_of(converted(flagger_canary(iterations=4))[1])
    assert blue_green.strategy.blue_green is not None
    assert blue_green.strategy.blue_green.pre_promotion_analysis == api.AnalysisStep(iterations=4)


def test_argo_blue_green_header_and_mirror_steps() -> None:
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "checks"},
        "spec": {
            "args": [{"name": "service"}],
            "metrics": [
                {
                    "name": "success",
                    "interval": "1m",
                    "count": 3,
                    "failureLimit": 2,
                    "successCondition": "result[0] >= 0.99",
                    "provider": {"prometheus": {"query": "q{s='{{args.service}}'}"}},
                },
                {"name": "dd", "provider": {"datadog": {"query": "x"}}},
            ],
        },
    }
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-deploy"},
            "strategy": {
                "blueGreen": {
                    "activeService": "web",
                    "previewService": "web-canary",
                    "autoPromotionEnabled": False,
                    "scaleDownDelaySeconds": 60,
                    "previewMetadata": {"labels": {"x": "y"}},
                    "prePromotionAnalysis": {
                        "templates": [{"templateName": "checks"}],
                        "args": [{"name": "service", "value": "web-preview"}],
                    },
                }
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 8080}]},
    }
    text, documents = converted(template, rollout, service)
    assert of_kind(documents, "Deployment") == []  # workloadRef: the Deployment exists
    spec = rollout_of(documents)
    assert spec.target_ref.name == "web-deploy"
    assert spec.service == api.ServiceRef(name="web", port=8080)
    assert spec.traffic_routing.service == api.ServiceRouting(preview_service="web-canary")
    blue_green = spec.strategy.blue_green
    assert blue_green is not None
    assert (blue_green.auto_promotion_enabled, blue_green.scale_down_delay_seconds) == (False, 60)
    assert blue_green.pre_promotion_analysis == api.AnalysisStep(iterations=3)
    assert (spec.analysis.interval, spec.analysis.failure_limit) == ("1m", 3)
    (metric,) = spec.analysis.metrics
    assert metric.template_ref == api.TemplateRef(name="checks-success")
    assert metric.args == [api.MetricArg(name="service", value="web-preview")]
    (made,) = of_kind(documents, "MetricTemplate")
    assert made["spec"]["thresholdRange"] == {"min": 0.99}
    assert made["spec"]["query"] == "q{s='{{ args.service }}'}"
    assert "# TODO: spec.strategy.blueGreen.previewMetadata" in text
    assert "# TODO: spec.metrics[1].provider: datadog" in text
    # A preview Service named like tidegate's own canary Service is warned about.
    assert "# TODO: spec.strategy.blueGreen.previewService: Service web-canary" in text
    assert lint_problems(documents) == []

    canary = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "web"}}},
            "strategy": {
                "canary": {
                    "stableService": "web-stable",
                    "trafficRouting": {
                        "plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "web-route"}}
                    },
                    "steps": [
                        {"setHeaderRoute": {"name": "h", "match": [
                            {"headerName": "x-v", "headerValue": {"exact": "2"}}
                        ]}},
                        {"setMirrorRoute": {"name": "m", "percentage": 25, "match": [{}]}},
                        {"setCanaryScale": {"replicas": 1}},
                        {"setWeight": 10},
                    ],
                }
            },
        },
    }  # fmt: skip
    text, documents = converted(canary)
    spec = rollout_of(documents)
    assert spec.traffic_routing.gateway_api == api.GatewayAPIRouting(http_route="web-route")
    assert spec.strategy.canary is not None
    steps = [
        s.model_dump(by_alias=True, exclude_none=True) for s in spec.strategy.canary.steps or []
    ]
    assert steps == [
        {"setHeaderRoute": {"match": [{"headerName": "x-v", "headerValue": {"exact": "2"}}]}},
        {"setMirrorRoute": {"percentage": 25}},
        {"setWeight": 10},
    ]
    assert "# TODO: spec.strategy.canary.steps[2]: setCanaryScale" in text
    assert "# TODO: spec.strategy.canary.steps[1].setMirrorRoute.match" in text
    assert "# TODO: spec.strategy.canary.stableService: Service web-stable" in text
    assert lint_problems(documents) == []


def test_an_argo_canary_without_traffic_routing_becomes_pod_ratio() -> None:
    basic = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 4,
            "template": {"metadata": {"labels": {"app": "web"}}},
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
        },
    }
    text, documents = converted(basic)
    spec = rollout_of(documents)
    assert spec.traffic_routing.router == "podRatio"
    assert "# TODO: spec.strategy.canary.trafficRouting" not in text  # nothing left to do
    assert lint_problems(documents) == []


def test_argo_metrics_of_the_same_name_in_two_templates_are_both_kept() -> None:
    def template(name: str, cluster: bool = False) -> dict[str, Any]:
        return {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate",
            "metadata": {"name": name},
            "spec": {
                "metrics": [
                    {
                        "name": "errors",
                        "interval": "30s",
                        "successCondition": "result[0] < 1",
                        "provider": {"prometheus": {"query": f"{name}_errors"}},
                    }
                ]
            },
        }

    background = {"templates": [{"templateName": "app"}], "dryRun": [{"metricName": "x"}]}
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "web"}}},
            "strategy": {
                "canary": {
                    "analysis": background,
                    "steps": [
                        {"setWeight": 50},
                        {"analysis": background},  # the same template again: once
                        {
                            "analysis": {
                                "templates": [{"templateName": "edge", "clusterScope": True}]
                            }
                        },
                    ],
                }
            },
        },
    }
    text, documents = converted(template("app"), template("edge", cluster=True), rollout)
    metrics = rollout_of(documents).analysis.metrics
    assert [(m.name, m.template_ref) for m in metrics] == [
        ("errors", api.TemplateRef(name="app")),
        ("edge-errors", api.TemplateRef(name="edge", kind=api.MetricTemplateKind.CLUSTER)),
    ]
    assert [d["kind"] for d in documents[:2]] == ["MetricTemplate", "ClusterMetricTemplate"]
    assert "# TODO: spec.metrics[0].successCondition: result[0] < 1: tidegate's bounds" in text
    assert "# TODO: spec.strategy.canary.analysis.dryRun: no counterpart" in text
    assert lint_problems(documents) == []


def test_the_command_reads_files_and_writes_the_conversion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "flagger.yaml"
    manifest.write_text(yaml.safe_dump_all(objects(FLAGGER, SCENARIO, NAMESPACE, PROMETHEUS)))
    assert cli.main(["convert", "-f", str(manifest)]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "tidegate.yaml"
    written.write_text(out)
    problems, summary = lint.lint([written])
    assert problems == []
    assert summary == [f"{written}: 1 ProgressiveRollout(s), 1 metric template(s), ok"]

    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
    assert cli.main(["convert", "-f", str(empty)]) == 1
    assert "no Flagger Canary" in capsys.readouterr().err
