"""The stable and canary workloads: Deployments copied from the user's target Deployment.

The user's Deployment is the source of pod templates and replica counts. Tidegate runs one
copy of it per revision, `<target>-<revision>`, whose pods carry the revision label; a copy
never changes revision. A role is a pointer: the Services `<service>-stable` and
`<service>-canary` select the copy that has it, so a promotion flips `<service>-stable` to
the copy that was analysed, and no pod is made or restarted. Once the stable copy serves,
the user's own Deployment is scaled to zero; its template stays the desired version.

Copies made before copies were keyed by revision, `<target>-stable` and `<target>-canary`
with a role label, are found by the revision annotated on them and used as they are: a
rollout under way when tidegate is upgraded finishes on them, and they go as their
revisions lose their roles.
"""

from __future__ import annotations

import copy
import json

from tidegate.adapters.cache import Kind
from tidegate.adapters.kube import Kube, KubeError, Obj
from tidegate.engine import Selection, WorkloadState
from tidegate.ports import CLAIM_ANNOTATION, Role, WorkloadError, role_service
from tidegate.revisions import template_revision

# On copies made before copies were keyed by revision (and on Services that select them).
ROLE_LABEL = "tidegate.io/role"
ROLLOUT_LABEL = "tidegate.io/rollout"
REVISION_ANNOTATION = "tidegate.io/revision"
# On a copy's pods (and in its selector): the revision it runs.
REVISION_LABEL = "tidegate.io/revision"
_COPY_LABELS = (REVISION_LABEL, ROLE_LABEL)
# Copied from the target's spec as they are; replicas and selector are tidegate's.
_COPIED_SPEC_FIELDS = (
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
)
_DROPPED_METADATA = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    CLAIM_ANNOTATION,
)


def workload_state(deployment: Obj | None) -> WorkloadState | None:
    if deployment is None:
        return None
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    replicas = int(spec.get("replicas", 1))
    generation_seen = status.get("observedGeneration", 0) >= deployment["metadata"].get(
        "generation", 0
    )
    rolled_out = all(
        status.get(field, 0) == replicas
        for field in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    )
    revision = deployment["metadata"].get("annotations", {}).get(REVISION_ANNOTATION)
    return WorkloadState(revision=revision, replicas=replicas, ready=generation_seen and rolled_out)


def copy_name(target: str, revision: str) -> str:
    return f"{target}-{revision}"


def copy_label(deployment: Obj) -> dict[str, str]:
    """The label that tells a copy's pods from every other copy's: the part of its selector
    tidegate added (the revision; the role, on a copy made before copies were keyed by
    revision)."""
    match_labels = deployment["spec"]["selector"].get("matchLabels") or {}
    for key in _COPY_LABELS:
        if key in match_labels:
            return {key: match_labels[key]}
    return {}


def selecting(label: dict[str, str]) -> Obj:
    """A merge patch of a Service's selector that selects the copy `label` tells (the other
    copy label taken out; the rest of the selector as it was)."""
    return {**{key: None for key in _COPY_LABELS}, **label}


# A Service of tidegate's before the engine points it at a copy: it selects no pod.
_NO_COPY = {REVISION_LABEL: ""}


def workload_copy(target: Obj, rollout: str, revision: str, replicas: int) -> Obj:
    """The Deployment that runs `revision`, `target`'s pod template."""
    meta, spec = target["metadata"], target["spec"]
    template = copy.deepcopy(spec["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[REVISION_LABEL] = revision
    selector = copy.deepcopy(spec["selector"])
    selector.setdefault("matchLabels", {})[REVISION_LABEL] = revision
    annotations = {
        k: v for k, v in meta.get("annotations", {}).items() if k not in _DROPPED_METADATA
    }
    labels = {k: v for k, v in meta.get("labels", {}).items() if k not in _COPY_LABELS}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": copy_name(meta["name"], revision),
            "namespace": meta["namespace"],
            "labels": {**labels, REVISION_LABEL: revision, ROLLOUT_LABEL: rollout},
            "annotations": {**annotations, REVISION_ANNOTATION: revision},
        },
        "spec": {
            **{k: spec[k] for k in _COPIED_SPEC_FIELDS if k in spec},
            "replicas": replicas,
            "selector": selector,
            "template": template,
        },
    }


def as_template_source(workload: Obj, target_name: str) -> Obj:
    """A copy, shaped as the target it was copied from."""
    source = copy.deepcopy(workload)
    source["metadata"]["name"] = target_name
    for key in _COPY_LABELS:
        source["spec"]["selector"].get("matchLabels", {}).pop(key, None)
        source["spec"]["template"]["metadata"].get("labels", {}).pop(key, None)
    return source


def owner_reference(owner: Obj) -> Obj:
    """An owner reference to the rollout `owner`."""
    return {
        "apiVersion": owner.get("apiVersion", "tidegate.io/v1alpha1"),
        "kind": owner.get("kind", "ProgressiveRollout"),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


async def add_owner(kube: Kube, kind: Kind, namespace: str, obj: Obj, reference: Obj) -> None:
    """Add `reference` to the object's ownerReferences (no blockOwnerDeletion: it needs
    more rights, and nothing waits on it)."""
    meta = obj["metadata"]
    owners = list(meta.get("ownerReferences") or [])
    if any(o.get("uid") == reference["uid"] for o in owners):
        return
    body = {
        "metadata": {
            "resourceVersion": meta["resourceVersion"],
            "ownerReferences": [*owners, reference],
        }
    }
    await kube.patch(kind, namespace, meta["name"], body)


def _scaled(deployment: Obj, replicas: int) -> Obj:
    """A patch of the replica count, on the condition that the Deployment is still the
    version that was read: a late write (from a replica that lost the Lease meanwhile, or
    decided on what was since changed) fails with a Conflict instead of undoing a newer one."""
    version = deployment["metadata"].get("resourceVersion")
    patch: Obj = {"spec": {"replicas": replicas}}
    if version is not None:
        patch["metadata"] = {"resourceVersion": version}
    return patch


class KubeWorkloads:
    """The `Workloads` port on the Kubernetes API."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        rollout: str,
        target: str,
        service: str,
        port: int,
        *,
        keep_previous: bool = False,
    ) -> None:
        self.kube = kube
        # spec.waves.revertOnLaterFailure or revertOnUpstreamRollback: the stable copy's
        # template is kept when a promotion replaces it, so that the release before can be
        # brought back.
        self.keep_previous = keep_previous
        self.namespace = namespace
        self.rollout = rollout
        self.target_name = target
        self.service_name = service
        self.port = port

    def service(self, role: Role) -> str:
        return role_service(self.service_name, role)

    async def target(self) -> Obj | None:
        return await self.kube.read("deployments", self.namespace, self.target_name)

    def _ours(self, found: Obj) -> bool:
        return (found["metadata"].get("labels") or {}).get(ROLLOUT_LABEL) == self.rollout

    def _check_owned(self, kind: str, found: Obj) -> None:
        """Raise NameConflict unless `found` carries this rollout's label."""
        if not self._ours(found):
            name = found["metadata"]["name"]
            raise WorkloadError(
                f"{kind} {self.namespace}/{name} exists and was not made by tidegate for this "
                f"rollout (it lacks the label {ROLLOUT_LABEL}={self.rollout}); tidegate does "
                "not touch it: rename or delete it",
                reason="NameConflict",
            )

    async def _find(self, revision: str | None) -> Obj | None:
        """The copy that runs `revision`: `<target>-<revision>`, or one made before copies
        were keyed by revision that runs it."""
        if not revision:
            return None
        name = copy_name(self.target_name, revision)
        found = await self.kube.read("deployments", self.namespace, name)
        if found is not None:
            self._check_owned("Deployment", found)
            return found
        for role in ("stable", "canary"):
            legacy = await self.kube.read(
                "deployments", self.namespace, f"{self.target_name}-{role}"
            )
            if legacy is not None and self._ours(legacy) and _revision(legacy) == revision:
                return legacy
        return None

    async def copy_name(self, revision: str) -> str:
        found = await self._find(revision)
        return (
            found["metadata"]["name"]
            if found is not None
            else copy_name(self.target_name, revision)
        )

    async def observe(self, revision: str | None) -> tuple[Obj | None, WorkloadState | None]:
        found = await self._find(revision)
        return found, workload_state(found)

    async def ensure(self, revision: str, replicas: int, target: Obj | None) -> None:
        existing = await self._find(revision)
        if existing is not None:
            if int(existing["spec"].get("replicas", 1)) != replicas:
                await self._scale(existing, replicas)
            return
        source = await self._template_source(revision, target)
        await self.kube.apply(workload_copy(source, self.rollout, revision, replicas))

    async def scale(self, revision: str, replicas: int) -> None:
        found = await self._find(revision)
        if found is not None and int(found["spec"].get("replicas", 1)) != replicas:
            await self._scale(found, replicas)

    async def _scale(self, found: Obj, replicas: int) -> None:
        name = found["metadata"]["name"]
        await self.kube.patch("deployments", self.namespace, name, _scaled(found, replicas))

    async def remove(self, revision: str, keep_template: bool) -> None:
        found = await self._find(revision)
        if found is None:
            return
        if keep_template and self.keep_previous:
            await self._keep(found)
        meta = found["metadata"]
        await self.kube.delete("deployments", self.namespace, meta["name"], meta["uid"])

    async def _template_source(self, revision: str, target: Obj | None) -> Obj:
        """Where the pod template of `revision` can be copied from.

        Usually the target; but when the target moved on (or went), a copy that runs the
        revision, or the template kept of the stable revision before the last promotion.
        """
        if target is not None and template_revision(target["spec"]["template"]) == revision:
            return target
        found = await self._find(revision)
        if found is not None:
            return as_template_source(found, self.target_name)
        kept = await self._kept()
        if kept is not None and kept[0] == revision:
            return kept[1]
        now = (
            f"now holds revision {template_revision(target['spec']['template'])}"
            if target is not None
            else "does not exist"
        )
        raise WorkloadError(f"no template of revision {revision} is left: the target {now}")

    async def _label_of(self, revision: str) -> dict[str, str]:
        """The label that selects the copy of `revision` (the one it will have, if there is
        no copy yet)."""
        found = await self._find(revision)
        label = copy_label(found) if found is not None else {}
        return label or {REVISION_LABEL: revision}

    async def _selects(self, name: str) -> str | None:
        """The revision whose copy Service `name` selects (None: none of this rollout's)."""
        found = await self.kube.read("services", self.namespace, name)
        selector = (found or {}).get("spec", {}).get("selector") or {}
        if selector.get(REVISION_LABEL):
            return str(selector[REVISION_LABEL])
        role = selector.get(ROLE_LABEL)
        if role in ("stable", "canary"):
            legacy = await self.kube.read(
                "deployments", self.namespace, f"{self.target_name}-{role}"
            )
            if legacy is not None and self._ours(legacy):
                return _revision(legacy)
        return None

    async def selection(self) -> Selection:
        return Selection(
            stable=await self._selects(self.service("stable")),
            canary=await self._selects(self.service("canary")),
        )

    async def point(self, role: Role, revision: str) -> None:
        await self._select(self.service(role), await self._label_of(revision), empty_too=True)

    async def service_isolated(self, revision: str | None) -> bool:
        found = await self.kube.read("services", self.namespace, self.service_name)
        if found is None:
            return True  # nothing selects the pods but tidegate's own Services
        selector = found.get("spec", {}).get("selector") or {}
        if not selector:
            return True  # a Service without a selector has endpoints of its own: untouched
        if revision is None:
            return False
        label = await self._label_of(revision)
        return all(selector.get(k) == label.get(k) for k in _COPY_LABELS)

    async def isolate_service(self, revision: str) -> None:
        await self._select(self.service_name, await self._label_of(revision))

    async def restore_service(self) -> bool:
        return await self._select(self.service_name, {})

    async def _select(self, name: str, label: dict[str, str], *, empty_too: bool = False) -> bool:
        """Service `name`'s selector with the copy label set to `label` ({}: taken out), the
        rest as it was; False when it was so already. A Service without a selector has
        endpoints of its own and is left alone, unless `empty_too` (one of tidegate's)."""
        found = await self.kube.read("services", self.namespace, name)
        if found is None:
            return False
        selector = found.get("spec", {}).get("selector") or {}
        if not selector and not empty_too:
            return False
        if all(selector.get(k) == label.get(k) for k in _COPY_LABELS):
            return False
        patch = {
            "metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
            # A merge patch: the labels set to None are removed.
            "spec": {"selector": selecting(label)},
        }
        await self.kube.patch("services", self.namespace, name, patch)
        return True

    def _kept_name(self) -> str:
        return f"{self.target_name}-previous-stable"

    async def _keep(self, stable: Obj) -> None:
        """Keep the stable copy's template (a ConfigMap owned by the rollout: one,
        overwritten at each promotion)."""
        # Written over only when it is this rollout's: a ConfigMap someone else named so is
        # reported (NameConflict) and left as it is, like a copy's name taken.
        found = await self.kube.get_or_none("configmaps", self.namespace, self._kept_name())
        if found is not None:
            self._check_owned("ConfigMap", found)
        meta = stable["metadata"]
        source = as_template_source(stable, self.target_name)
        # Owned by the rollout (read from the cache): it goes when the rollout goes.
        owner = await self.kube.read("progressiverollouts", self.namespace, self.rollout)
        owners = [owner_reference(owner)] if owner is not None else []
        kept = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self._kept_name(),
                "namespace": self.namespace,
                "labels": {ROLLOUT_LABEL: self.rollout},
                "ownerReferences": owners,
            },
            "data": {
                "revision": (meta.get("annotations") or {}).get(REVISION_ANNOTATION, ""),
                "deployment": json.dumps(
                    {
                        "metadata": {
                            "name": self.target_name,
                            "labels": source["metadata"].get("labels") or {},
                            "annotations": source["metadata"].get("annotations") or {},
                        },
                        "spec": source["spec"],
                    }
                ),
            },
        }
        await self.kube.apply(kept)

    async def _kept(self) -> tuple[str, Obj] | None:
        """The revision kept by `_keep`, and its Deployment (as a template source)."""
        found = await self.kube.get_or_none("configmaps", self.namespace, self._kept_name())
        if found is None:
            return None
        labels = found["metadata"].get("labels") or {}
        data = found.get("data") or {}
        if labels.get(ROLLOUT_LABEL) != self.rollout or "deployment" not in data:
            return None
        source: Obj = json.loads(data["deployment"])
        source["metadata"]["namespace"] = self.namespace
        return data.get("revision", ""), source

    async def release_target(self, target: Obj) -> None:
        """Scale the user's Deployment to zero: the stable copy serves in its place."""
        if target["spec"].get("replicas", 1) == 0:
            return
        await self.kube.patch("deployments", self.namespace, self.target_name, _scaled(target, 0))

    async def claim_target(self, target: Obj) -> None:
        # The resourceVersion makes two rollouts claiming at once fail one of them (409).
        patch = {
            "metadata": {
                "resourceVersion": target["metadata"]["resourceVersion"],
                "annotations": {CLAIM_ANNOTATION: self.rollout},
            }
        }
        try:
            await self.kube.patch("deployments", self.namespace, self.target_name, patch)
        except KubeError as error:
            # Someone changed the target meanwhile (or our cached copy is behind): the next
            # reconcile, woken by that change, looks at the claim again.
            if error.status != 409:
                raise

    async def restore_template(self, target: Obj, source: Obj) -> None:
        template = as_template_source(source, self.target_name)["spec"]["template"]
        patch = {
            "metadata": {"resourceVersion": target["metadata"]["resourceVersion"]},
            "spec": {"template": template},
        }
        await self.kube.patch("deployments", self.namespace, self.target_name, patch)

    async def restore_target(self, target: Obj, replicas: int) -> None:
        await self.kube.patch(
            "deployments", self.namespace, self.target_name, {"spec": {"replicas": replicas}}
        )

    def target_ready(self, target: Obj, replicas: int) -> bool:
        state = workload_state(target)
        return state is not None and state.ready and state.replicas == replicas

    async def unclaim_target(self, target: Obj) -> None:
        if CLAIM_ANNOTATION in (target["metadata"].get("annotations") or {}):
            patch = {"metadata": {"annotations": {CLAIM_ANNOTATION: None}}}
            await self.kube.patch("deployments", self.namespace, self.target_name, patch)

    async def hand_over(self, owner: Obj) -> None:
        """The copies of the revisions the rollout's status names, and tidegate's Services,
        owned by the rollout."""
        reference = owner_reference(owner)
        status = owner.get("status") or {}
        revisions = [status.get("stableRevision"), status.get("canaryRevision")]
        for revision in {*revisions, *(status.get("retiring") or [])}:
            copy_ = await self._find(revision)
            if copy_ is not None:
                await add_owner(self.kube, "deployments", self.namespace, copy_, reference)
        for role in ("stable", "canary"):
            service = await self.kube.read("services", self.namespace, self.service(role))
            if service is not None:
                self._check_owned("Service", service)
                await add_owner(self.kube, "services", self.namespace, service, reference)

    async def ensure_services(self, target: Obj) -> None:
        """Create `<service>-stable` and `<service>-canary` if missing, selecting no pod
        until the engine points them at a copy; ports as the user's."""
        missing: list[Role] = []
        for role in ("stable", "canary"):
            found = await self.kube.read("services", self.namespace, self.service(role))
            if found is None:
                missing.append(role)
            else:
                self._check_owned("Service", found)
        if not missing:
            return  # the usual case, on every reconcile: no need to read the user's Service
        user_service = await self.kube.read("services", self.namespace, self.service_name)
        ports = (user_service or {}).get("spec", {}).get("ports") or [
            {"name": "http", "port": self.port, "targetPort": self.port}
        ]
        ports = [{k: v for k, v in p.items() if k != "nodePort"} for p in ports]
        match_labels: dict[str, str] = target["spec"]["selector"].get("matchLabels", {})
        for role in missing:
            service = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": self.service(role),
                    "namespace": self.namespace,
                    "labels": {ROLE_LABEL: role, ROLLOUT_LABEL: self.rollout},
                },
                "spec": {"selector": {**match_labels, **_NO_COPY}, "ports": ports},
            }
            await self.kube.apply(service)


def _revision(deployment: Obj) -> str | None:
    revision = (deployment["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
    return str(revision) if revision is not None else None
