"""The copies keyed by revision, against a fake client: found by revision (copies made
before copies were keyed by revision included), Services pointed at them, removed by uid."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fake_kube import FakeKube

from tidegate.adapters.workloads import (
    REVISION_ANNOTATION,
    REVISION_LABEL,
    ROLE_LABEL,
    ROLLOUT_LABEL,
    KubeWorkloads,
)
from tidegate.engine import Selection
from tidegate.ports import WorkloadError
from tidegate.revisions import template_revision

Obj = dict[str, Any]
TEMPLATE = {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [{"name": "a"}]}}


class Cluster(FakeKube):
    """FakeKube with server-side apply and deletes (by uid), recorded."""

    def __init__(self, *objects: Obj) -> None:
        super().__init__(*objects)
        self.applied: list[str] = []
        self.deleted: list[tuple[str, str]] = []

    async def apply(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        self.applied.append(name)
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("resourceVersion", "1")
        stored["metadata"].setdefault("uid", f"u-{name}")
        self.objects[name] = stored

    async def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        assert self.objects[name]["metadata"]["uid"] == uid
        self.deleted.append((kind, name))
        del self.objects[name]

    # A read straight from the API server (ConfigMaps are not watched).
    async def get_or_none(self, kind: str, namespace: str, name: str) -> Obj | None:
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None


def deployment(name: str, revision: str, label: dict[str, str], rollout: str = "r") -> Obj:
    return {
        "metadata": {
            "name": name,
            "uid": f"u-{name}",
            "resourceVersion": "1",
            "labels": {ROLLOUT_LABEL: rollout},
            "annotations": {REVISION_ANNOTATION: revision},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop", **label}},
            "template": {"metadata": {"labels": {"app": "shop", **label}}, "spec": {}},
        },
        "status": {},
    }


def service(name: str, **label: str) -> Obj:
    return {
        "metadata": {"name": name, "resourceVersion": "1", "labels": {ROLLOUT_LABEL: "r"}},
        "spec": {"selector": {"app": "shop", **label}},
    }


def target() -> Obj:
    return {
        "metadata": {"name": "shop", "namespace": "ns", "resourceVersion": "1"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": copy.deepcopy(TEMPLATE),
        },
    }


def from_before_revisions() -> Cluster:
    """A rollout as tidegate left it before copies were keyed by revision: mid-rollout of
    v2, the copies and Services by role. (Its Service is `web`, so that no Service has a
    Deployment's name in the fake, which keys objects by name alone.)"""
    return Cluster(
        deployment("shop-stable", "v1", {ROLE_LABEL: "stable"}),
        deployment("shop-canary", "v2", {ROLE_LABEL: "canary"}),
        service("web-stable", **{ROLE_LABEL: "stable"}),
        service("web-canary", **{ROLE_LABEL: "canary"}),
        service("web", **{ROLE_LABEL: "stable"}),
    )


def adapter(kube: FakeKube) -> KubeWorkloads:
    return KubeWorkloads(kube, "ns", "r", "shop", "web", 80)  # type: ignore[arg-type]


async def test_copies_from_before_revisions_are_found_by_the_revision_they_run() -> None:
    kube = from_before_revisions()
    copies = adapter(kube)
    assert (await copies.observe("v1"))[0]["metadata"]["name"] == "shop-stable"  # type: ignore[index]
    assert (await copies.observe("v2"))[0]["metadata"]["name"] == "shop-canary"  # type: ignore[index]
    assert await copies.observe("v9") == (None, None)
    assert await copies.copy_name("v1") == "shop-stable"
    assert await copies.copy_name("v9") == "shop-v9"
    assert await copies.selection() == Selection(stable="v1", canary="v2")
    assert await copies.service_isolated("v1") and not await copies.service_isolated("v2")


async def test_a_promotion_from_before_revisions_flips_the_service_to_the_old_canary_copy() -> None:
    kube = from_before_revisions()
    copies = adapter(kube)
    await copies.point("stable", "v2")
    assert kube.objects["web-stable"]["spec"]["selector"] == {"app": "shop", ROLE_LABEL: "canary"}
    assert await copies.selection() == Selection(stable="v2", canary="v2")
    await copies.isolate_service("v2")
    assert kube.objects["web"]["spec"]["selector"] == {"app": "shop", ROLE_LABEL: "canary"}
    writes = len(kube.patches)
    await copies.point("stable", "v2")
    assert len(kube.patches) == writes  # as it is already: nothing written
    await copies.remove("v1", keep_template=False)
    assert kube.deleted == [("deployments", "shop-stable")]


async def test_the_next_revision_gets_a_copy_of_its_own_and_the_services_move_to_it() -> None:
    kube = from_before_revisions()
    copies = adapter(kube)
    revision = template_revision(TEMPLATE)
    await copies.ensure(revision, 2, target())
    assert kube.applied == [f"shop-{revision}"]
    made = kube.objects[f"shop-{revision}"]
    assert made["spec"]["selector"]["matchLabels"] == {"app": "shop", REVISION_LABEL: revision}
    await copies.point("canary", revision)
    assert kube.objects["web-canary"]["spec"]["selector"] == {
        "app": "shop", REVISION_LABEL: revision
    }  # fmt: skip
    assert (await copies.selection()).canary == revision
    # Asked again: the copy runs that revision already, only its size is written.
    await copies.ensure(revision, 3, target())
    assert kube.applied == [f"shop-{revision}"]
    assert kube.objects[f"shop-{revision}"]["spec"]["replicas"] == 3
    assert await copies.restore_service() is True
    assert kube.objects["web"]["spec"]["selector"] == {"app": "shop"}


async def test_a_deployment_of_a_copys_name_that_is_not_this_rollouts_is_never_touched() -> None:
    kube = Cluster(deployment("shop-v2", "v2", {REVISION_LABEL: "v2"}, rollout="someone-else"))
    with pytest.raises(WorkloadError) as conflict:
        await adapter(kube).ensure("v2", 2, target())
    assert conflict.value.reason == "NameConflict"
    assert kube.applied == [] and kube.patches == []
    # A Deployment of an old role name that is someone else's is just not a copy.
    foreign = Cluster(deployment("shop-stable", "v1", {ROLE_LABEL: "stable"}, rollout="other"))
    assert await adapter(foreign).observe("v1") == (None, None)


def config_map(name: str, labels: dict[str, str]) -> Obj:
    return {"metadata": {"name": name, "labels": labels, "resourceVersion": "1"}, "data": {}}


async def test_the_release_before_is_kept_only_in_a_config_map_of_this_rollouts() -> None:
    kube = Cluster(deployment("shop-v1", "v1", {REVISION_LABEL: "v1"}))
    kube.objects["r"] = {"metadata": {"name": "r", "uid": "u-r"}}  # the rollout, its owner
    kube.objects["shop-previous-stable"] = config_map("shop-previous-stable", {"app": "theirs"})
    copies = KubeWorkloads(kube, "ns", "r", "shop", "web", 80, keep_previous=True)  # type: ignore[arg-type]
    with pytest.raises(WorkloadError, match="ConfigMap ns/shop-previous-stable exists") as taken:
        await copies.remove("v1", keep_template=True)
    assert taken.value.reason == "NameConflict"
    assert kube.applied == [] and "shop-v1" in kube.objects  # neither written nor removed
    kube.objects["shop-previous-stable"] = config_map("shop-previous-stable", {ROLLOUT_LABEL: "r"})
    await copies.remove("v1", keep_template=True)
    assert kube.applied == ["shop-previous-stable"] and "shop-v1" not in kube.objects
