"""The side-by-side benchmark's scenario, written once, and its translation for each controller.

A reviewer checks here that tidegate, Flagger and Argo Rollouts are asked to do the same
work: the same demo app and versions, the same traffic steps, the same analysis interval,
the same failure rule and the same question asked of the same Prometheus ("what share of the
canary's requests failed over the last interval?"). Where a controller cannot be asked the
same thing, the translation says so in `DIFFERENCES`, which the benchmark prints with its
table.

Pure: builds Kubernetes objects as dicts; nothing here talks to a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

TIDEGATE, FLAGGER, ARGO = "tidegate", "flagger", "argo-rollouts"
CONTROLLERS = (TIDEGATE, FLAGGER, ARGO)


@dataclass(frozen=True)
class Scenario:
    name: str = "shop"
    stable: str = "1.0.0"
    good: str = "1.1.0"  # a healthy canary
    bad: str = "1.2.0"  # a canary failing `bad_error_rate` of its requests
    bad_error_rate: float = 0.5
    # 5 pods: Argo Rollouts' basic canary splits traffic by pod count, and 20 % is 1 of 5.
    replicas: int = 5
    steps: tuple[int, ...] = (20, 50)
    # Flagger's shortest analysis interval (it raises anything shorter to 10 s): the one
    # interval every controller accepts.
    interval_s: int = 10
    # The canary fails at its first failing measurement.
    failures_allowed: int = 0
    max_error_rate: float = 0.05
    rps: float = 50.0
    # Without Flagger's own default (the time it gives a Deployment to become ready).
    deadline_s: int = 600

    @property
    def interval(self) -> str:
        return f"{self.interval_s}s"

    def host(self, namespace: str) -> str:
        return f"{self.name}.{namespace}.example.com"


SCENARIO = Scenario()

# The one query, with the canary's series picked by `selector`: 5xx share over one interval.
# No 5xx series means no errors; no requests at all leave the denominator empty: no data.
ERROR_RATE = (
    '(sum(rate({metric}{{{selector}, code=~"5.."}}[{window}])) or vector(0))'
    " / sum(rate({metric}{{{selector}}}[{window}]))"
)
# The gateway's per-backend counter (tidegate and Flagger route to a canary Service) and
# the demo app's own counter, labelled with its pod template (Argo Rollouts' basic canary
# has no canary Service: both versions are behind one).
GATEWAY_METRIC = "gateway_requests_total"
APP_METRIC = "demo_http_requests_total"
# For the fleets (idle cost, all N changed at once) nothing serves traffic: an analysis
# that always passes, as in bench/scale.py, asked of the same Prometheus.
FLEET_QUERY = "vector(0)"


def error_rate_query(metric: str, selector: str, window: str) -> str:
    return ERROR_RATE.format(metric=metric, selector=selector, window=window)


# The canary's series in each controller's own template variables, side by side.
CANARY_SERIES = {
    TIDEGATE: (GATEWAY_METRIC, 'namespace="{{ namespace }}", backend="{{ canaryService }}"'),
    FLAGGER: (GATEWAY_METRIC, 'namespace="{{ namespace }}", backend="{{ target }}-canary"'),
    ARGO: (APP_METRIC, 'template="{{ args.namespace }}/{{ args.canary-hash }}"'),
}


def canary_query(controller: str, s: Scenario) -> str:
    return error_rate_query(*CANARY_SERIES[controller], s.interval)


DIFFERENCES = {
    TIDEGATE: [
        "routes by HTTPRoute weights to a canary Service; query on the gateway's counter "
        "by backend={{ canaryService }}",
    ],
    FLAGGER: [
        "routes by HTTPRoute weights (-mesh-provider=gatewayapi:v1beta1) to <name>-canary; "
        "the same query on the gateway's counter by backend=<name>-canary",
        "analysis interval minimum 10 s (shorter ones are raised to 10 s)",
        "rolls back on the tick after the one whose check failed (threshold 1)",
        "promotion copies the canary's template to <name>-primary and waits for it: extra "
        "ticks after the last step",
    ],
    ARGO: [
        "basic canary: the weight is the share of ready pods (1 of 5 = 20 %, then 3 of 5 "
        "rounded up from 50 %), one Service over both ReplicaSets; no HTTPRoute write "
        "(the Gateway API traffic router is a plugin it would have to download, "
        "which cannot be done here)",
        "the same ratio asked of the demo app's own counter by pod template "
        "(rollouts-pod-template-hash of the canary, its Latest hash), since the gateway "
        "sees one backend",
        "background analysis every 10 s during the steps' 10 s pauses",
        "its measurement times are whole seconds (AnalysisRun finishedAt), so 'first 5xx -> "
        "failing measurement' reads up to 1 s short and 'measurement -> write' up to 1 s long",
        "its traffic write is the canary ReplicaSet scaled down; the gateway applies it when "
        "the controller-manager has made the pods terminate, inside 'write -> applied'",
        "a query error (no data, Prometheus down) is not a failure until 5 in a row "
        "(consecutiveErrorLimit 4, its default, kept)",
    ],
}


# --- the app ---------------------------------------------------------------------------------


def resource(api_version: str, kind: str, name: str, namespace: str, spec: Obj) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def env(version: str, error_rate: float = 0.0) -> list[Obj]:
    return [
        {"name": "VERSION", "value": version},
        {"name": "ERROR_RATE", "value": str(error_rate)},
        {"name": "LATENCY_MS", "value": "5"},
    ]


def pod_template(s: Scenario) -> Obj:
    return {
        "metadata": {"labels": {"app": s.name}},
        "spec": {
            "containers": [
                {"name": "app", "image": "registry.k8s.io/pause:3.10", "env": env(s.stable)}
            ]
        },
    }


def deployment(s: Scenario, namespace: str) -> Obj:
    spec = {
        "replicas": s.replicas,
        "selector": {"matchLabels": {"app": s.name}},
        "template": pod_template(s),
    }
    return resource("apps/v1", "Deployment", s.name, namespace, spec)


def service(s: Scenario, namespace: str) -> Obj:
    spec = {
        "selector": {"app": s.name},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
    }
    return resource("v1", "Service", s.name, namespace, spec)


def http_route(s: Scenario, namespace: str) -> Obj:
    spec = {
        "hostnames": [s.host(namespace)],
        "rules": [{"backendRefs": [{"name": s.name, "port": 80}]}],
    }
    return resource("gateway.networking.k8s.io/v1", "HTTPRoute", s.name, namespace, spec)


# --- tidegate --------------------------------------------------------------------------------


def tidegate_objects(
    s: Scenario, namespace: str, prometheus_url: str, *, query: str | None = None
) -> list[Obj]:
    del prometheus_url  # tidegate is given Prometheus' address when started
    q = query or canary_query(TIDEGATE, s)
    rollout = resource(
        "tidegate.io/v1alpha1",
        "ProgressiveRollout",
        s.name,
        namespace,
        {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "service": {"name": s.name, "port": 80},
            "trafficRouting": {"gatewayAPI": {"httpRoute": s.name}},
            "progressDeadlineSeconds": s.deadline_s,
            "strategy": {"canary": {"steps": [{"setWeight": w} for w in s.steps]}},
            "analysis": {
                "interval": s.interval,
                # tidegate fails a rollout when failed measurements reach failureLimit.
                "failureLimit": s.failures_allowed + 1,
                "metrics": [
                    {
                        "name": "error-rate",
                        "query": q,
                        "thresholdRange": {"max": s.max_error_rate},
                    }
                ],
            },
        },
    )
    return [deployment(s, namespace), service(s, namespace), http_route(s, namespace), rollout]


# --- Flagger ---------------------------------------------------------------------------------


def flagger_objects(
    s: Scenario, namespace: str, prometheus_url: str, *, query: str | None = None
) -> list[Obj]:
    """Flagger makes the Services (<name>, -primary, -canary) and the HTTPRoute itself."""
    q = query or canary_query(FLAGGER, s)
    template = resource(
        "flagger.app/v1beta1",
        "MetricTemplate",
        "error-rate",
        namespace,
        {"provider": {"type": "prometheus", "address": prometheus_url}, "query": q},
    )
    canary = resource(
        "flagger.app/v1beta1",
        "Canary",
        s.name,
        namespace,
        {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
            "progressDeadlineSeconds": s.deadline_s,
            "service": {
                "port": 80,
                "targetPort": 8080,
                "hosts": [s.host(namespace)],
                # Written into the HTTPRoute's parentRefs; the dev gateway takes every route.
                "gatewayRefs": [{"name": "dev", "namespace": namespace}],
            },
            "analysis": {
                "interval": s.interval,
                # Flagger rolls back when failed checks reach the threshold.
                "threshold": s.failures_allowed + 1,
                "stepWeights": list(s.steps),
                "metrics": [
                    {
                        "name": "error-rate",
                        "templateRef": {"name": "error-rate", "namespace": namespace},
                        "thresholdRange": {"max": s.max_error_rate},
                        "interval": s.interval,
                    }
                ],
            },
        },
    )
    return [deployment(s, namespace), template, canary]


# --- Argo Rollouts ---------------------------------------------------------------------------


def argo_objects(
    s: Scenario, namespace: str, prometheus_url: str, *, query: str | None = None
) -> list[Obj]:
    """A Rollout in place of the Deployment, with the same pod template; basic canary."""
    q = query or canary_query(ARGO, s)
    template = resource(
        "argoproj.io/v1alpha1",
        "AnalysisTemplate",
        "error-rate",
        namespace,
        {
            "args": [{"name": "namespace"}, {"name": "canary-hash"}],
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": s.interval,
                    # Argo fails a metric when failed measurements exceed failureLimit.
                    "failureLimit": s.failures_allowed,
                    "successCondition": f"result[0] <= {s.max_error_rate}",
                    "provider": {"prometheus": {"address": prometheus_url, "query": q}},
                }
            ],
        },
    )
    steps: list[Obj] = []
    for weight in s.steps:
        steps += [{"setWeight": weight}, {"pause": {"duration": s.interval}}]
    rollout = resource(
        "argoproj.io/v1alpha1",
        "Rollout",
        s.name,
        namespace,
        {
            "replicas": s.replicas,
            "selector": {"matchLabels": {"app": s.name}},
            "template": pod_template(s),
            "progressDeadlineSeconds": s.deadline_s,
            "strategy": {
                "canary": {
                    "steps": steps,
                    "analysis": {
                        "templates": [{"templateName": "error-rate"}],
                        "args": [
                            {"name": "namespace", "value": namespace},
                            {
                                "name": "canary-hash",
                                "valueFrom": {"podTemplateHashValue": "Latest"},
                            },
                        ],
                    },
                }
            },
        },
    )
    return [service(s, namespace), http_route(s, namespace), template, rollout]


OBJECTS = {TIDEGATE: tidegate_objects, FLAGGER: flagger_objects, ARGO: argo_objects}
# What holds the pod template the benchmark changes, per controller.
WORKLOAD_KIND = {TIDEGATE: "deployment", FLAGGER: "deployment", ARGO: "rollout.argoproj.io"}


def objects(
    controller: str, s: Scenario, namespace: str, prometheus_url: str, *, fleet: bool = False
) -> list[Obj]:
    """The scenario for one controller; `fleet`: one replica, the always-passing query."""
    if fleet:
        s = Scenario(**{**s.__dict__, "replicas": 1})
    return OBJECTS[controller](s, namespace, prometheus_url, query=FLEET_QUERY if fleet else None)


def change_patch(version: str, error_rate: float = 0.0) -> list[Obj]:
    """The JSON patch that gives the workload's pod template a new version."""
    return [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/env",
            "value": env(version, error_rate),
        }
    ]
