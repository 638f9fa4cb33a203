from typing import Any

from tidegate.adapters.wiring import ROUTER_CAPABILITIES, ROUTERS, router_capabilities
from tidegate.validation import spec_problems


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
