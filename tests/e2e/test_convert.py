"""`kubectl tidegate convert` end to end: a Flagger Canary and an Argo Rollout written for
the canary example's app, converted, applied, and run by the operator against the real API
server, Prometheus and gateway: a healthy version is promoted, a failing one rolled back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from rollout_support import Shop, route_host, set_version, weights_until

from tidegate.plugin import convert, lint

INTERVAL = "4s"
STEPS = [10, 30, 60]
# The canary example's error-rate query, as each peer's template would write it.
FLAGGER_QUERY = (
    '(sum(rate(gateway_requests_total{namespace="{{ namespace }}", '
    'backend="{{ target }}-canary", code=~"5.."}[{{ interval }}])) or vector(0)) / '
    'sum(rate(gateway_requests_total{namespace="{{ namespace }}", '
    'backend="{{ target }}-canary"}[{{ interval }}]))'
)
ARGO_QUERY = (
    '(sum(rate(gateway_requests_total{namespace="{{args.namespace}}", '
    'backend="{{args.canary-service}}", code=~"5.."}[4s])) or vector(0)) / '
    'sum(rate(gateway_requests_total{namespace="{{args.namespace}}", '
    'backend="{{args.canary-service}}"}[4s]))'
)


def flagger(namespace: str) -> list[dict[str, Any]]:
    template = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {"provider": {"type": "prometheus"}, "query": FLAGGER_QUERY},
    }
    canary = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "shop"},
        "spec": {
            "provider": "gatewayapi:v1",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
            "progressDeadlineSeconds": 120,
            "revertOnDeletion": True,
            "service": {"port": 80, "targetPort": 8080, "hosts": [route_host(namespace, "shop")]},
            "analysis": {
                "interval": INTERVAL,
                "threshold": 2,
                "stepWeights": STEPS,
                "metrics": [
                    {
                        "name": "error-rate",
                        "templateRef": {"name": "error-rate"},
                        "thresholdRange": {"max": 0.05},
                    }
                ],
            },
        },
    }
    return [template, canary]


def argo(namespace: str) -> list[dict[str, Any]]:
    app = {"labels": {"app": "shop"}}
    template = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "args": [{"name": "namespace"}, {"name": "canary-service"}],
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": INTERVAL,
                    "failureLimit": 1,
                    "successCondition": "result[0] <= 0.05",
                    "provider": {"prometheus": {"query": ARGO_QUERY}},
                }
            ],
        },
    }
    steps: list[dict[str, Any]] = []
    for weight in STEPS:
        steps += [{"setWeight": weight}, {"pause": {"duration": INTERVAL}}]
    container = {
        "name": "app",
        "image": "registry.k8s.io/pause:3.10",
        "env": [
            {"name": "VERSION", "value": "1.0.0"},
            {"name": "ERROR_RATE", "value": "0"},
            {"name": "LATENCY_MS", "value": "5"},
        ],
    }
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": app["labels"]},
            "template": {"metadata": app, "spec": {"containers": [container]}},
            "progressDeadlineSeconds": 120,
            "strategy": {
                "canary": {
                    "trafficRouting": {
                        "plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "shop"}}
                    },
                    "steps": steps,
                    "analysis": {
                        "templates": [{"templateName": "error-rate"}],
                        "args": [
                            {"name": "namespace", "value": namespace},
                            {"name": "canary-service", "value": "shop-canary"},
                        ],
                    },
                }
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shop"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
    }
    return [template, rollout, service]


def converted(documents: list[dict[str, Any]]) -> str:
    text = convert.convert_text([yaml.safe_dump_all(documents)])
    problems = [p for d in yaml.safe_load_all(text) if d for p in lint.document_problems(d)]
    assert problems == [], text
    return text


def promotes_then_rolls_back(shop: Shop) -> None:
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    weights = weights_until(shop, {"Succeeded", "Failed"})
    status = shop.status()
    assert status["phase"] == "Succeeded", status
    assert [w for w in weights if w] == STEPS, weights
    metrics = {m["name"]: m["phase"] for m in status["metrics"]}
    assert metrics == {"error-rate": "Passed"}, status

    set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
    weights = weights_until(shop, {"Failed", "Succeeded"})
    status = shop.status()
    assert status["phase"] == "Failed", status
    assert max(weights) == STEPS[0] and shop.weight() == 0, weights
    assert status["failedChecks"] == 2, status


def test_a_converted_flagger_canary_promotes_and_rolls_back(
    namespace: str, start_shop: Callable[..., Shop]
) -> None:
    text = converted(flagger(namespace))
    assert "kind: HTTPRoute" in text  # Flagger made the route; the conversion writes it
    promotes_then_rolls_back(start_shop(text))


def test_a_converted_argo_rollout_promotes_and_rolls_back(
    namespace: str, start_shop: Callable[..., Shop]
) -> None:
    text = converted(argo(namespace))
    assert "kind: Deployment" in text  # the Rollout's pod template, as a Deployment
    promotes_then_rolls_back(start_shop(text))
