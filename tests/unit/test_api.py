from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tidegate.api import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ConditionType,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
)


def spec_dict(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "targetRef": {"name": "podinfo"},
        "service": {"name": "podinfo", "port": 9898},
        "strategy": {
            "canary": {
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "30s"}},
                    {"setWeight": 50},
                    {"analysis": {"iterations": 3}},
                    {"pause": {}},
                    {"setWeight": 100},
                ]
            }
        },
        "trafficRouting": {"gatewayAPI": {"httpRoute": "podinfo"}},
        "analysis": {
            "interval": "30s",
            "metrics": [
                {
                    "name": "error-rate",
                    "query": 'sum(rate(errors{service="{{ canaryService }}"}[{{ interval }}]))',
                    "thresholdRange": {"max": 0.05},
                }
            ],
        },
    }
    spec.update(overrides)
    return spec


def with_canary(**canary: Any) -> dict[str, Any]:
    return spec_dict(strategy={"canary": canary})


def test_constants() -> None:
    assert (GROUP, VERSION, KIND, PLURAL) == (
        "tidegate.io",
        "v1alpha1",
        "ProgressiveRollout",
        "progressiverollouts",
    )


def test_full_example_parses_with_defaults() -> None:
    spec = RolloutSpec.model_validate(spec_dict())
    assert spec.target_ref.api_version == "apps/v1"
    assert spec.target_ref.kind == "Deployment"
    assert spec.traffic_routing.gateway_api.rule_index == 0
    assert spec.analysis.failure_limit == 2
    assert spec.progress_deadline_seconds == 600
    assert not spec.skip_analysis and not spec.paused
    steps = spec.strategy.canary.steps
    assert steps is not None
    assert steps[4].pause is not None and steps[4].pause.duration is None
    assert steps[3].analysis is not None and steps[3].analysis.iterations == 3


def test_wire_form_round_trips() -> None:
    spec = RolloutSpec.model_validate(spec_dict())
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["trafficRouting"] == {"gatewayAPI": {"httpRoute": "podinfo", "ruleIndex": 0}}
    assert wire["analysis"]["metrics"][0]["thresholdRange"] == {"max": 0.05}
    assert RolloutSpec.model_validate(wire) == spec


def test_snake_case_names_are_accepted_too() -> None:
    spec = RolloutSpec.model_validate(spec_dict(progress_deadline_seconds=60))
    assert spec.progress_deadline_seconds == 60


def test_shorthand_and_default_analysis() -> None:
    data = with_canary(stepWeight=20, maxWeight=50)
    del data["analysis"]
    spec = RolloutSpec.model_validate(data)
    assert spec.strategy.canary.step_weight == 20
    assert spec.analysis.interval == "1m"
    assert spec.analysis.metrics == []


BAD_SPECS: list[tuple[str, dict[str, Any], str]] = [
    (
        "weights decreasing",
        with_canary(steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 20}]),
        "must not decrease",
    ),
    (
        "min greater than max",
        spec_dict(
            analysis={
                "metrics": [{"name": "m", "query": "q", "thresholdRange": {"min": 2, "max": 1}}]
            }
        ),
        "min (2) must not be greater than thresholdRange.max (1)",
    ),
    (
        "empty threshold range",
        spec_dict(analysis={"metrics": [{"name": "m", "query": "q", "thresholdRange": {}}]}),
        "needs min, max or both",
    ),
    (
        "steps and stepWeight",
        with_canary(steps=[{"setWeight": 10}], stepWeight=10, maxWeight=50),
        "not both",
    ),
    ("neither form", with_canary(), "either steps, or both stepWeight and maxWeight"),
    ("stepWeight alone", with_canary(stepWeight=10), "both stepWeight and maxWeight"),
    (
        "stepWeight above maxWeight",
        with_canary(stepWeight=60, maxWeight=50),
        "stepWeight (60) must not be greater than maxWeight (50)",
    ),
    (
        "step with two kinds",
        with_canary(steps=[{"setWeight": 10, "pause": {}}]),
        "setHeaderRoute or setMirrorRoute (found: setWeight, pause)",
    ),
    ("step with no kind", with_canary(steps=[{}]), "(found: none)"),
    (
        "bad duration",
        with_canary(steps=[{"pause": {"duration": "10 minutes"}}]),
        "should match pattern",
    ),
    ("bad interval", spec_dict(analysis={"interval": "1d"}), "should match pattern"),
    ("zero interval", spec_dict(analysis={"interval": "0s"}), "greater than zero"),
    (
        "a duration past any date",
        with_canary(steps=[{"pause": {"duration": "99999999999999999999999999999h"}}]),
        "longer than the maximum, 168h",
    ),
    (
        "a duration past the maximum",
        with_canary(steps=[{"pause": {"duration": "9999999999h"}}]),
        "longer than the maximum, 168h",
    ),
    ("a deadline past a week", spec_dict(progressDeadlineSeconds=604801), "less than or equal"),
    ("weight above 100", with_canary(steps=[{"setWeight": 101}]), "less than or equal to 100"),
    ("port zero", spec_dict(service={"name": "s", "port": 0}), "greater than or equal to 1"),
    ("wrong kind", spec_dict(targetRef={"name": "x", "kind": "StatefulSet"}), "Deployment"),
    ("empty steps", with_canary(steps=[]), "at least 1 item"),
    (
        "duplicate metric",
        spec_dict(
            analysis={
                "metrics": [
                    {"name": "m", "query": "q", "thresholdRange": {"max": 1}},
                    {"name": "m", "query": "q", "thresholdRange": {"max": 1}},
                ]
            }
        ),
        "used more than once",
    ),
    ("unknown field", spec_dict(stratgey={}), "Extra inputs are not permitted"),
    (
        "both strategies",
        spec_dict(strategy={"canary": {"stepWeight": 10, "maxWeight": 50}, "blueGreen": {}}),
        "set exactly one of canary or blueGreen (found both)",
    ),
    (
        "no strategy",
        spec_dict(strategy={}),
        "set exactly one of canary or blueGreen (found neither)",
    ),
    (
        "two routers",
        spec_dict(trafficRouting={"gatewayAPI": {"httpRoute": "r"}, "service": {}}),
        "set exactly one of gatewayAPI, service or podRatio (found more than one)",
    ),
    (
        "no router",
        spec_dict(trafficRouting={}),
        "set exactly one of gatewayAPI, service or podRatio (found none)",
    ),
    (
        "service and podRatio",
        spec_dict(trafficRouting={"service": {}, "podRatio": {}}),
        "set exactly one of gatewayAPI, service or podRatio (found more than one)",
    ),
    (
        "header value both exact and regex",
        with_canary(
            steps=[
                {
                    "setHeaderRoute": {
                        "match": [{"headerName": "X", "headerValue": {"exact": "a", "regex": "b"}}]
                    }
                }
            ]
        ),
        "set exactly one of exact or regex",
    ),
    (
        "header regex that does not compile",
        with_canary(
            steps=[
                {"setHeaderRoute": {"match": [{"headerName": "X", "headerValue": {"regex": "("}}]}}
            ]
        ),
        "does not compile",
    ),
    ("mirror over 100", with_canary(steps=[{"setMirrorRoute": {"percentage": 101}}]), "100"),
    ("too many steps", with_canary(steps=[{"setWeight": 1}] * 65), "at most 64 items"),
]


@pytest.mark.parametrize(
    ("data", "message"), [(d, m) for _, d, m in BAD_SPECS], ids=[n for n, _, _ in BAD_SPECS]
)
def test_bad_specs_are_rejected_readably(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutSpec.model_validate(data)
    assert message in str(caught.value)


def test_empty_status_is_a_valid_initial_status() -> None:
    status = RolloutStatus.model_validate({})
    assert status.phase is None
    assert status.canary_weight == 0
    assert status.metrics == [] and status.conditions == []
    assert status.model_dump(mode="json", by_alias=True, exclude_none=True) == {
        "message": "",
        "canaryWeight": 0,
        "mirrorPercent": 0,
        "previewActive": False,
        "passedChecks": 0,
        "failedChecks": 0,
        "inconclusiveChecks": 0,
        "retiring": [],
        "inconclusivePause": False,
        "metrics": [],
        "webhooks": [],
        "preRolloutPassed": False,
        "conditions": [],
    }


def test_status_round_trips_through_the_wire_form() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = RolloutStatus.model_validate(
        {
            "phase": RolloutPhase.PROGRESSING,
            "observed_generation": 3,
            "current_step_index": 2,
            "canary_weight": 20,
            "stable_revision": "abc",
            "canary_revision": "def",
            "replicas": 3,
            "rollout_started_at": now,
            "step_started_at": now,
            "next_measurement_at": now,
            "passed_checks": 1,
            "failed_checks": 1,
            "metrics": [
                {"name": "error-rate", "phase": "Passed", "value": 0.01, "measuredAt": now},
                {"name": "latency", "phase": "NoData", "measuredAt": now},
            ],
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "X", "lastTransitionTime": now}
            ],
        }
    )
    wire = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["phase"] == "Progressing"
    assert wire["rolloutStartedAt"] == "2025-01-02T03:04:05Z"
    assert wire["metrics"][1] == {
        "name": "latency",
        "phase": "NoData",
        "message": "",
        "measuredAt": "2025-01-02T03:04:05Z",
    }
    assert RolloutStatus.model_validate(wire) == status
    assert status.condition(ConditionType.READY) is not None
    assert status.condition(ConditionType.DEGRADED) is None


def test_status_ignores_unknown_fields_and_assumes_utc() -> None:
    status = RolloutStatus.model_validate(
        {"phase": "Failed", "futureField": 1, "stepStartedAt": "2025-01-01T00:00:00"}
    )
    assert status.phase is RolloutPhase.FAILED
    assert status.step_started_at == datetime(2025, 1, 1, tzinfo=UTC)


def test_non_finite_metric_values_are_not_stored() -> None:
    status = RolloutStatus.model_validate(
        {"metrics": [{"name": "m", "phase": "Failed", "value": float("nan"), "measuredAt": 0}]}
    )
    assert status.metrics[0].value is None
