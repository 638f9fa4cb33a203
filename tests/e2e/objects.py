"""Small manifests the e2e tests build on."""

from __future__ import annotations

from typing import Any


def deployment(
    name: str, *, replicas: int = 1, version: str = "v1", error_rate: float = 0.0, app: str = ""
) -> dict[str, Any]:
    labels = {"app": app or name}
    env = [
        {"name": "VERSION", "value": version},
        {"name": "ERROR_RATE", "value": str(error_rate)},
        {"name": "LATENCY_MS", "value": "2"},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "registry.k8s.io/pause:3.10", "env": env}
                    ]
                },
            },
        },
    }


def service(name: str, app: str, port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": port, "targetPort": 8080}]},
    }


def http_route(name: str, hostname: str, backends: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {
            "hostnames": [hostname],
            "rules": [
                {"backendRefs": [{"name": svc, "port": 80, "weight": w} for svc, w in backends]}
            ],
        },
    }
