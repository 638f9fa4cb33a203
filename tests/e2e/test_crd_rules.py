"""The CRD's own rules, through a real API server: a spec that docs/api.md says is wrong is
refused by `kubectl apply` with a message naming the field, and no object is stored (the
operator's validation refuses it too); the spec they are made from is taken. No operator
runs: the API server alone decides."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tidegate import api
from tidegate_devenv.cluster import KubectlRunner


def valid_spec() -> dict[str, Any]:
    return {
        "targetRef": {"name": "shop"},
        "service": {"name": "shop", "port": 80},
        "strategy": {"canary": {"steps": [{"setWeight": 10}]}},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}},
        "analysis": {
            "interval": "30s",
            "load": {
                "url": "http://{{ canaryService }}.{{namespace}}.svc:80/?w={{ window }}",
                "rate": 5,
                "headers": {"X-Load-Test": "1", "Accept": "text/html"},
            },
        },
        "webhooks": [{"name": "smoke", "type": "preRollout", "url": "http://tests.shop.svc/smoke"}],
    }


def manifest(name: str, spec: dict[str, Any]) -> str:
    rollout = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name}}
    return yaml.safe_dump({**rollout, "spec": spec})


def with_interval(value: str) -> dict[str, Any]:
    spec = valid_spec()
    spec["analysis"]["interval"] = value
    return spec


def with_timeout(value: str) -> dict[str, Any]:
    spec = valid_spec()
    spec["webhooks"][0]["timeout"] = value
    return spec


def with_load(**load: Any) -> dict[str, Any]:
    spec = valid_spec()
    spec["analysis"]["load"].update(load)
    return spec


def with_routers(**routers: Any) -> dict[str, Any]:
    spec = valid_spec()
    spec["trafficRouting"] = routers
    return spec


INTERVAL = ("spec.analysis.interval", "must be a duration above zero and of at most 168h")
ROUTERS = ("spec.trafficRouting", "set exactly one of gatewayAPI, service or podRatio")
TIMEOUT = ("spec.webhooks[0].timeout", "must be a duration above zero and of at most 5m")
HEADER_NAME = ("spec.analysis.load.headers", "every name must be an HTTP header name")
CREDENTIAL = ("spec.analysis.load.headers", "looks like a credential")
REFUSED = {
    "interval-0s": (with_interval("0s"), INTERVAL),
    "interval-0": (with_interval("0"), INTERVAL),
    "interval-169h": (with_interval("169h"), INTERVAL),
    "timeout-0s": (with_timeout("0s"), TIMEOUT),
    "timeout-0ms": (with_timeout("0ms"), TIMEOUT),
    "timeout-301s": (with_timeout("301s"), TIMEOUT),
    "header-name": (with_load(headers={"X Load": "1"}), HEADER_NAME),
    "header-authorization": (with_load(headers={"authorization": "Bearer x"}), CREDENTIAL),
    "header-api-key": (with_load(headers={"X-Api-Key": "x"}), CREDENTIAL),
    "two-routers": (with_routers(service={}, podRatio={}), ROUTERS),
    "no-router": (with_routers(), ROUTERS),
}


def stored_names(kubectl: KubectlRunner, namespace: str) -> list[str]:
    listed = kubectl.check("get", "progressiverollouts", "-n", namespace, "-o", "json")
    return [item["metadata"]["name"] for item in json.loads(listed)["items"]]


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_value_the_docs_forbid_is_refused_at_apply(
    kubectl: KubectlRunner, namespace: str, rollout_crd: None, case: str
) -> None:
    spec, (field, message) = REFUSED[case]
    # The operator's own validation refuses it too.
    with pytest.raises(ValueError):
        api.RolloutSpec.model_validate(spec)

    refused = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=manifest("bad", spec))
    assert refused.returncode != 0, refused.stdout
    assert "is invalid" in refused.stderr, refused.stderr
    assert f"{field}: Invalid value" in refused.stderr, refused.stderr
    assert message in refused.stderr, refused.stderr
    assert stored_names(kubectl, namespace) == []


def test_the_valid_spec_is_taken_with_the_crds_defaults(
    kubectl: KubectlRunner, namespace: str, rollout_crd: None
) -> None:
    spec = valid_spec()
    api.RolloutSpec.model_validate(spec)
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=manifest("good", spec))
    stored = json.loads(
        kubectl.check("get", "progressiverollout", "good", "-n", namespace, "-o", "json")
    )
    assert stored["spec"]["analysis"]["load"] == {**spec["analysis"]["load"], "method": "GET"}
    assert stored["spec"]["analysis"]["failureLimit"] == 2
    assert stored_names(kubectl, namespace) == ["good"]


def test_a_webhook_without_a_timeout_gets_the_default(
    kubectl: KubectlRunner, namespace: str, rollout_crd: None
) -> None:
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=manifest("plain", valid_spec()))
    stored = json.loads(
        kubectl.check("get", "progressiverollout", "plain", "-n", namespace, "-o", "json")
    )
    assert stored["spec"]["webhooks"][0]["timeout"] == "10s"
    api.RolloutSpec.model_validate(stored["spec"])
