"""The CRD's own rules, through a real API server: a spec that docs/api.md says is wrong is
refused by `kubectl apply` with a message naming the field, and no object is stored; the
same spec with a valid value is taken. No operator runs: the API server alone decides."""

from __future__ import annotations

import copy
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
        "analysis": {"interval": "30s"},
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


INTERVAL = "spec.analysis.interval"
TIMEOUT = "spec.webhooks[0].timeout"
REFUSED = [
    (with_interval("0s"), INTERVAL, "must be a duration above zero and of at most 168h"),
    (with_interval("0"), INTERVAL, "must be a duration above zero and of at most 168h"),
    (with_interval("169h"), INTERVAL, "must be a duration above zero and of at most 168h"),
    (with_timeout("0s"), TIMEOUT, "must be a duration above zero and of at most 5m"),
    (with_timeout("0ms"), TIMEOUT, "must be a duration above zero and of at most 5m"),
    (with_timeout("301s"), TIMEOUT, "must be a duration above zero and of at most 5m"),
]


def stored_names(kubectl: KubectlRunner, namespace: str) -> list[str]:
    listed = kubectl.check("get", "progressiverollouts", "-n", namespace, "-o", "json")
    return [item["metadata"]["name"] for item in json.loads(listed)["items"]]


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    REFUSED,
    ids=["interval-0s", "interval-0", "interval-169h", "timeout-0s", "timeout-0ms", "timeout-301s"],
)
def test_a_duration_the_docs_forbid_is_refused_at_apply(
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    # The operator's own validation refuses it too: the two say the same.
    with pytest.raises(ValueError, match=r"greater than zero|longer than the maximum"):
        api.RolloutSpec.model_validate(spec)

    refused = kubectl.run("apply", "-n", namespace, "-f", "-", stdin=manifest("bad", spec))
    assert refused.returncode != 0, refused.stdout
    assert "is invalid" in refused.stderr, refused.stderr
    assert f"{field}: Invalid value" in refused.stderr, refused.stderr
    assert message in refused.stderr, refused.stderr
    assert stored_names(kubectl, namespace) == []

    # The same rollout with a valid value is taken, and stored with the CRD's defaults.
    fixed = copy.deepcopy(spec)
    fixed["analysis"]["interval"] = "30s"
    fixed["webhooks"][0]["timeout"] = "5m"
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=manifest("good", fixed))
    stored = json.loads(
        kubectl.check("get", "progressiverollout", "good", "-n", namespace, "-o", "json")
    )
    assert stored["spec"]["analysis"]["interval"] == "30s"
    assert stored["spec"]["analysis"]["failureLimit"] == 2
    assert stored["spec"]["webhooks"][0]["timeout"] == "5m"
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
