"""deploy/waves: the read-only access one region gives the others' tidegates (docs/waves.md).

Read as files here; tests/e2e/test_regions.py applies them, mints kubeconfigs with the
script and holds those against real API servers (what they may read, and what not).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

WAVES = Path(__file__).resolve().parents[2] / "deploy" / "waves"
NAME = "tidegate-wave-reader"


def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((WAVES / "kustomization.yaml").read_text())
    found: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        found += [o for o in yaml.safe_load_all((WAVES / resource).read_text()) if o]
    return found


def test_the_reader_may_only_read_progressive_rollouts() -> None:
    by_kind = {o["kind"]: o for o in objects()}
    assert sorted(by_kind) == ["Role", "RoleBinding", "ServiceAccount"]
    assert by_kind["Role"]["rules"] == [
        {
            "apiGroups": ["tidegate.io"],
            "resources": ["progressiverollouts"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = by_kind["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": NAME,
    }
    # Without a namespace, the subject is the account in the binding's own namespace.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME}]
    assert {o["metadata"]["name"] for o in objects()} == {NAME}


def test_applied_in_the_namespace_of_the_rollouts() -> None:
    # `kubectl apply -n <namespace> -k deploy/waves`: nothing may pin another namespace.
    assert all("namespace" not in o["metadata"] for o in objects())
    assert "namespace" not in yaml.safe_load((WAVES / "kustomization.yaml").read_text())


def test_the_mint_script_is_there_and_executable() -> None:
    script = WAVES / "mint-reader-kubeconfig.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert f"account={NAME}" in text
    assert "create token" in text


def test_the_operators_access_in_a_waves_namespace_is_a_role_for_its_account() -> None:
    operator = WAVES / "operator"
    kustomization = yaml.safe_load((operator / "kustomization.yaml").read_text())
    found = [
        o
        for resource in kustomization["resources"]
        for o in yaml.safe_load_all((operator / resource).read_text())
        if o
    ]
    by_kind = {o["kind"]: o for o in found}
    assert sorted(by_kind) == ["Role", "RoleBinding"]
    assert all("namespace" not in o["metadata"] for o in found)
    assert by_kind["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
    ]
    # The account deploy/kustomize and the chart's defaults run the operator as.
    deployed = yaml.safe_load_all((WAVES.parent / "kustomize" / "serviceaccount.yaml").read_text())
    account = next(o for o in deployed if o and o["kind"] == "ServiceAccount")
    assert by_kind["RoleBinding"]["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": "tidegate-system",
        }
    ]
