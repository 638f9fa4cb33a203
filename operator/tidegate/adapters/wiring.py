"""The running operator's ports: Kubernetes through one client, and Prometheus."""

from __future__ import annotations

from lightkube import AsyncClient

from tidegate import api
from tidegate.adapters.gatewayapi import GatewayAPIRouter
from tidegate.adapters.kube_rollouts import KubeEvents, KubeRollouts
from tidegate.adapters.prometheus import PrometheusMetrics
from tidegate.adapters.workloads import KubeWorkloads
from tidegate.ports import Ports, role_service


def kube_ports(client: AsyncClient) -> Ports:
    def workloads(namespace: str, rollout: str, spec: api.RolloutSpec) -> KubeWorkloads:
        return KubeWorkloads(
            client, namespace, rollout, spec.target_ref.name, spec.service.name, spec.service.port
        )

    def router(namespace: str, spec: api.RolloutSpec) -> GatewayAPIRouter:
        route = spec.traffic_routing.gateway_api
        return GatewayAPIRouter(
            client,
            namespace,
            route.http_route,
            route.rule_index,
            role_service(spec.service.name, "stable"),
            role_service(spec.service.name, "canary"),
            spec.service.port,
            route.preview_http_route,
        )

    return Ports(
        rollouts=KubeRollouts(client),
        events=KubeEvents(client),
        metrics=PrometheusMetrics(),
        workloads=workloads,
        router=router,
    )
