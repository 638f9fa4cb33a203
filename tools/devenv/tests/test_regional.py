"""The canary example made regional: rollouts the operator accepts, whose queries read their
own region only, chained a → b → c through the reader Secrets."""

from __future__ import annotations

import json

import yaml

from tidegate import validation
from tidegate.adapters.wiring import router_capabilities
from tidegate_devenv.regional import (
    RELEASE_ANNOTATION,
    chain,
    regional_app,
    regional_rollout,
    release_patch,
)


def test_chained_rollouts_are_valid_and_read_their_own_region() -> None:
    waves = chain(["a", "b", "c"], "shop", 10)
    assert waves["a"] == {}
    assert [r["cluster"] for r in waves["c"]["after"]] == ["b"]
    assert waves["b"]["after"][0]["kubeconfigSecretRef"] == {"name": "a-reader"}
    for cluster in ("a", "b", "c"):
        rollout = yaml.safe_load(regional_rollout(cluster, waves[cluster]))
        spec, problems = validation.spec_problems(rollout["spec"], router_capabilities)
        assert spec is not None and problems == []
        for metric in spec.analysis.metrics:
            assert f'cluster="{cluster}", namespace="{{{{ namespace }}}}"' in (metric.query or "")


def test_releases_named_by_annotation() -> None:
    rollout = yaml.safe_load(regional_rollout("a", {}, by_annotation=True))
    assert rollout["spec"]["waves"]["release"] == f"annotation:{RELEASE_ANNOTATION}"
    deployment = next(
        o for o in yaml.safe_load_all(regional_app("r1", host="h")) if o["kind"] == "Deployment"
    )
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {RELEASE_ANNOTATION: "r1"}
    patch = json.loads(release_patch("2.0.0", 0.5, "r2"))["spec"]["template"]
    assert patch["metadata"]["annotations"] == {RELEASE_ANNOTATION: "r2"}
    assert patch["spec"]["containers"][0]["env"] == [
        {"name": "VERSION", "value": "2.0.0"},
        {"name": "ERROR_RATE", "value": "0.5"},
    ]
