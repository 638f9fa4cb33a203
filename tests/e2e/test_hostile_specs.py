"""500 specs a careless or hostile author could write (tests/hostile_specs.py), through the
real API server: each is refused at apply with a message naming a field, or taken; every
one taken is then applied for real beside a running operator, which answers each with a
status (a phase, or a condition saying what is wrong) and lets each be deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from hostile_specs import rollout_specs
from tidegate import api, validation
from tidegate.adapters.wiring import router_capabilities
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import start_operator
from tidegate_devenv.waiting import wait_until

COUNT = 500
APPLIED_AT_MOST = 60  # of those taken, applied for real (each is a watch event and a status)


def rollout(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def test_hostile_specs_are_refused_at_apply_or_answered_by_the_operator(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> None:
    api_client = config.new_client_from_config(config_file=environment.kubeconfig)  # type: ignore[no-untyped-call]
    custom = client.CustomObjectsApi(api_client)
    where = (api.GROUP, api.VERSION, namespace, api.PLURAL)
    taken: list[dict[str, Any]] = []
    seen = {
        "refused": 0, "undecodable": 0, "taken": 0, "taken_but_invalid": 0, "valid_but_refused": 0
    }  # fmt: skip

    @settings(max_examples=COUNT, deadline=None, suppress_health_check=list(HealthCheck))
    @given(rollout_specs())
    def apply(spec: dict[str, Any]) -> None:
        parsed, problems = validation.spec_problems(spec, router_capabilities)  # never raises
        operator_takes = parsed is not None and not problems
        try:
            custom.create_namespaced_custom_object(
                *where, rollout(f"dry-{seen['refused'] + seen['taken']}", spec), dry_run="All"
            )
        except ApiException as refused:
            # 422: invalid, naming the field; 400: not even decodable as the kind (a number
            # past int64), said by the decoder.
            assert refused.status in (400, 422), (refused.status, refused.body)
            message = json.loads(refused.body)["message"]
            if refused.status == 422:
                assert "spec" in message, message  # names the field
            seen["refused"] += 1
            seen["undecodable"] += refused.status == 400
            seen["valid_but_refused"] += operator_takes
            return
        seen["taken"] += 1
        seen["taken_but_invalid"] += not operator_takes
        taken.append(spec)

    apply()
    print(f"hostile specs through the API server: {seen}")
    assert seen["refused"] + seen["taken"] >= COUNT

    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        names = [f"h-{i}" for i in range(min(len(taken), APPLIED_AT_MOST))]
        # As the dry run did: what the API server takes (unknown fields pruned), created.
        for name, spec in zip(names, taken, strict=False):
            custom.create_namespaced_custom_object(*where, rollout(name, spec))

        def unanswered() -> list[str]:
            listed = json.loads(
                kubectl.check("get", "progressiverollouts", "-n", namespace, "-o", "json")
            )["items"]
            answered = {
                o["metadata"]["name"]
                for o in listed
                if (o.get("status") or {}).get("phase") or (o.get("status") or {}).get("conditions")
            }
            return [name for name in names if name not in answered]

        wait_until(unanswered, "a status on every rollout taken", 120, until=lambda left: not left)
        kubectl.check("delete", "progressiverollouts", "--all", "-n", namespace, "--wait=false")
        wait_until(
            lambda: kubectl.check("get", "progressiverollouts", "-n", namespace, "-o", "name"),
            "every rollout deleted", 60, until=lambda left: not left.strip(),
        )  # fmt: skip
        assert operator.process.poll() is None
    finally:
        operator.stop()
        api_client.close()
