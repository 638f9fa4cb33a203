"""The HPA copies adapter (`tidegate.adapters.autoscalers`) against a fake of the Kube calls
it makes: what a copy is made of, when it is written, and what is never touched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tidegate.adapters.autoscalers import KubeAutoscalers, autoscaler_copy, holds
from tidegate.adapters.workloads import ROLE_LABEL, ROLLOUT_LABEL
from tidegate.ports import AutoscalerError

Obj = dict[str, Any]


def users_hpa(**spec: Any) -> Obj:
    return {
        "metadata": {
            "name": "shop-hpa",
            "namespace": "prod",
            "uid": "u-user",
            "labels": {"team": "a", ROLLOUT_LABEL: "copied-by-mistake"},
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
            "minReplicas": 2,
            "maxReplicas": 8,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu"}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            **spec,
        },
    }


class FakeKube:
    """HPAs by name: read, server-side applied (stored as sent), patched, deleted by uid."""

    def __init__(self, *objects: Obj) -> None:
        self.objects = {o["metadata"]["name"]: copy.deepcopy(o) for o in objects}
        self.writes: list[tuple[str, str, object]] = []

    async def read(self, kind: str, namespace: str, name: str) -> Obj | None:
        assert kind == "horizontalpodautoscalers"
        return copy.deepcopy(self.objects.get(name))

    async def apply(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.writes.append(("apply", name, obj))
        self.objects[name] = {
            **copy.deepcopy(obj),
            "metadata": {**obj["metadata"], "uid": f"u-{name}", "resourceVersion": "1"},
        }

    async def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> None:
        self.writes.append(("patch", name, patch))
        self.objects[name]["metadata"].update(patch["metadata"])

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        assert self.objects[name]["metadata"]["uid"] == uid
        self.writes.append(("delete", name, uid))
        del self.objects[name]


def adapter(kube: FakeKube) -> KubeAutoscalers:
    return KubeAutoscalers(kube, "prod", "shop-rollout", "shop", "shop-hpa")  # type: ignore[arg-type]


def test_a_copy_scales_its_own_deployment_with_the_users_bounds_metrics_and_behavior() -> None:
    source = users_hpa()
    canary = autoscaler_copy(source, "shop-rollout", "canary", "shop", "shop-c0ffee")
    assert canary["apiVersion"] == "autoscaling/v2"
    assert canary["metadata"]["name"] == "shop-canary"
    assert canary["metadata"]["labels"] == {
        "team": "a",
        ROLE_LABEL: "canary",
        ROLLOUT_LABEL: "shop-rollout",
    }
    assert canary["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-c0ffee"},
        "minReplicas": 2,
        "maxReplicas": 8,
        "metrics": source["spec"]["metrics"],
        "behavior": source["spec"]["behavior"],
    }


def test_holds_compares_what_is_copied_and_ignores_labels_added_by_others() -> None:
    desired = autoscaler_copy(users_hpa(), "shop-rollout", "stable", "shop", "shop-5ab1e")
    stored = copy.deepcopy(desired)
    stored["metadata"]["labels"]["argocd"] = "x"
    stored["status"] = {"currentReplicas": 5}
    assert holds(stored, desired)
    changed = autoscaler_copy(
        users_hpa(maxReplicas=9), "shop-rollout", "stable", "shop", "shop-5ab1e"
    )
    assert not holds(stored, changed)
    without_behavior = users_hpa()
    del without_behavior["spec"]["behavior"]
    assert not holds(
        stored, autoscaler_copy(without_behavior, "shop-rollout", "stable", "shop", "shop-5ab1e")
    )
    unmarked = copy.deepcopy(stored)
    del unmarked["metadata"]["labels"][ROLE_LABEL]
    assert not holds(unmarked, desired)


async def test_the_source_must_exist_and_scale_the_target() -> None:
    with pytest.raises(AutoscalerError) as missing:
        await adapter(FakeKube()).source()
    assert missing.value.reason == "AutoscalerNotFound"
    assert "prod/shop-hpa" in str(missing.value)
    elsewhere = users_hpa(
        scaleTargetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"}
    )
    statefulset = users_hpa(
        scaleTargetRef={"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "shop"}
    )
    for wrong in (elsewhere, statefulset):
        with pytest.raises(AutoscalerError) as invalid:
            await adapter(FakeKube(wrong)).source()
        assert invalid.value.reason == "InvalidSpec"
        assert "spec.autoscalerRef" in str(invalid.value)
    assert (await adapter(FakeKube(users_hpa())).source())["metadata"]["uid"] == "u-user"


async def test_a_copy_is_written_when_missing_or_different_and_only_then() -> None:
    kube = FakeKube()
    hpas = adapter(kube)
    await hpas.ensure("stable", users_hpa(), "shop-5ab1e")
    await hpas.ensure("stable", users_hpa(), "shop-5ab1e")
    assert [w[:2] for w in kube.writes] == [("apply", "shop-stable")]
    await hpas.ensure("stable", users_hpa(maxReplicas=20), "shop-5ab1e")
    assert [w[:2] for w in kube.writes] == [("apply", "shop-stable")] * 2
    assert kube.objects["shop-stable"]["spec"]["maxReplicas"] == 20


async def test_a_foreign_hpa_of_a_copys_name_is_never_written_nor_deleted() -> None:
    foreign = users_hpa()
    foreign["metadata"] = {"name": "shop-canary", "uid": "u-other", "labels": {"team": "b"}}
    kube = FakeKube(foreign)
    hpas = adapter(kube)
    with pytest.raises(AutoscalerError) as conflict:
        await hpas.ensure("canary", users_hpa(), "shop-5ab1e")
    assert conflict.value.reason == "NameConflict"
    await hpas.remove("canary")
    await hpas.hand_over({"metadata": {"name": "shop-rollout", "uid": "u-rollout"}})
    assert kube.writes == []


async def test_remove_deletes_this_rollouts_copy_by_uid_and_nothing_else() -> None:
    kube = FakeKube()
    hpas = adapter(kube)
    await hpas.remove("canary")  # nothing there: nothing asked
    await hpas.ensure("canary", users_hpa(), "shop-5ab1e")
    await hpas.remove("canary")
    assert kube.writes[-1] == ("delete", "shop-canary", "u-shop-canary")
    assert "shop-canary" not in kube.objects


async def test_hand_over_makes_the_rollout_own_its_copies() -> None:
    kube = FakeKube()
    hpas = adapter(kube)
    await hpas.ensure("stable", users_hpa(), "shop-5ab1e")
    await hpas.hand_over({"metadata": {"name": "shop-rollout", "uid": "u-rollout"}})
    owners = kube.objects["shop-stable"]["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("ProgressiveRollout", "shop-rollout", "u-rollout")
    ]
    writes = len(kube.writes)
    await hpas.hand_over({"metadata": {"name": "shop-rollout", "uid": "u-rollout"}})
    assert len(kube.writes) == writes  # owned already
