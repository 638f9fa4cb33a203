"""The running operator's ports: Kubernetes through one client, Prometheus, and webhooks
over HTTP(S).

Routers are found by the field set under `spec.trafficRouting`, metric providers by the
provider `spec.analysis` names: a new one is a module in `tidegate.adapters` and one entry
in ROUTERS or METRIC_PROVIDERS (with its field in the API).
"""

from __future__ import annotations

from collections.abc import Callable

from tidegate import api
from tidegate.adapters.autoscalers import KubeAutoscalers
from tidegate.adapters.gatewayapi import GatewayAPIRouter
from tidegate.adapters.kube import Kube
from tidegate.adapters.kube_rollouts import KubeEvents, KubeRollouts, KubeSecrets, KubeTemplates
from tidegate.adapters.loadtester import LoadtesterClient
from tidegate.adapters.pod_ratio_router import PodRatioRouter
from tidegate.adapters.prometheus import PrometheusMetrics
from tidegate.adapters.service_router import ServiceSelectorRouter
from tidegate.adapters.webhooks import HTTPWebhooks
from tidegate.adapters.workloads import KubeWorkloads
from tidegate.ports import (
    Autoscalers,
    Metrics,
    NoRegions,
    Notifier,
    Ports,
    Regions,
    Router,
    role_service,
)


def gateway_api_router(kube: Kube, namespace: str, spec: api.RolloutSpec) -> Router:
    route = spec.traffic_routing.gateway_api
    assert route is not None
    return GatewayAPIRouter(
        kube,
        namespace,
        route.http_route,
        route.rule_index,
        role_service(spec.service.name, "stable"),
        role_service(spec.service.name, "canary"),
        spec.service.port,
        route.preview_http_route,
    )


def service_router(kube: Kube, namespace: str, spec: api.RolloutSpec) -> Router:
    routing = spec.traffic_routing.service
    assert routing is not None
    return ServiceSelectorRouter(
        kube, namespace, spec.service.name, routing.preview_service, spec.target_ref.name
    )


def pod_ratio_router(kube: Kube, namespace: str, spec: api.RolloutSpec) -> Router:
    return PodRatioRouter(kube, namespace, spec.service.name, spec.target_ref.name)


# Prometheus is the only provider so far (`spec.analysis.prometheus`, or the operator's
# default address).
METRIC_PROVIDERS: dict[str, Callable[[], Metrics]] = {"prometheus": PrometheusMetrics}

ROUTERS: dict[str, Callable[[Kube, str, api.RolloutSpec], Router]] = {
    "gatewayAPI": gateway_api_router,
    "service": service_router,
    "podRatio": pod_ratio_router,
}

# What each router can carry, known without a cluster (for `kubectl tidegate lint`).
ROUTER_CAPABILITIES: dict[str, frozenset[str]] = {
    "gatewayAPI": GatewayAPIRouter.capabilities,
    "service": ServiceSelectorRouter.capabilities,
    "podRatio": PodRatioRouter.capabilities,
}


def router_capabilities(spec: api.RolloutSpec) -> frozenset[str]:
    return ROUTER_CAPABILITIES[spec.traffic_routing.router]


def kube_ports(kube: Kube, notifier: Notifier, regions: Regions | None = None) -> Ports:
    def workloads(namespace: str, rollout: str, spec: api.RolloutSpec) -> KubeWorkloads:
        return KubeWorkloads(
            kube,
            namespace,
            rollout,
            spec.target_ref.name,
            spec.service.name,
            spec.service.port,
            keep_previous=spec.waves is not None
            and (
                spec.waves.revert_on_later_failure or bool(spec.waves.revert_on_upstream_rollback)
            ),
        )

    def router(namespace: str, spec: api.RolloutSpec) -> Router:
        return ROUTERS[spec.traffic_routing.router](kube, namespace, spec)

    def autoscalers(namespace: str, rollout: str, spec: api.RolloutSpec) -> Autoscalers:
        # Without spec.autoscalerRef there is no source; the copies of an earlier one go.
        source = spec.autoscaler_ref.name if spec.autoscaler_ref is not None else ""
        return KubeAutoscalers(kube, namespace, rollout, spec.target_ref.name, source)

    return Ports(
        rollouts=KubeRollouts(kube),
        events=KubeEvents(kube),
        metrics=METRIC_PROVIDERS["prometheus"](),
        workloads=workloads,
        router=router,
        autoscalers=autoscalers,
        webhooks=HTTPWebhooks(),
        load=LoadtesterClient(),
        secrets=KubeSecrets(kube),
        notifier=notifier,
        templates=KubeTemplates(kube),
        regions=regions or NoRegions(),
    )
