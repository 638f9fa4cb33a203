"""The stable and canary workloads: Deployments copied from the user's target Deployment.

The user's Deployment is the source of pod templates and replica counts. Tidegate runs two
copies of it, `<target>-stable` and `<target>-canary`, whose pods carry a role label that
the Services `<service>-stable` and `<service>-canary` select. Once the stable copy serves,
the user's own Deployment is scaled to zero; its template stays the desired version.
"""

from __future__ import annotations

import copy
import json

from tidegate.adapters.cache import Kind
from tidegate.adapters.kube import Kube, KubeError, Obj
from tidegate.engine import WorkloadState
from tidegate.ports import CLAIM_ANNOTATION, Role, WorkloadError, role_service
from tidegate.revisions import template_revision

ROLE_LABEL = "tidegate.io/role"
ROLLOUT_LABEL = "tidegate.io/rollout"
REVISION_ANNOTATION = "tidegate.io/revision"
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


def _role_labels(target: Obj, role: Role) -> dict[str, str]:
    match_labels: dict[str, str] = target["spec"]["selector"].get("matchLabels", {})
    return {**match_labels, ROLE_LABEL: role}


def workload_copy(target: Obj, rollout: str, role: Role, revision: str, replicas: int) -> Obj:
    """The Deployment that runs `target`'s current pod template in `role`."""
    meta, spec = target["metadata"], target["spec"]
    template = copy.deepcopy(spec["template"])
    template.setdefault("metadata", {}).setdefault("labels", {})[ROLE_LABEL] = role
    selector = copy.deepcopy(spec["selector"])
    selector.setdefault("matchLabels", {})[ROLE_LABEL] = role
    annotations = {
        k: v for k, v in meta.get("annotations", {}).items() if k not in _DROPPED_METADATA
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{meta['name']}-{role}",
            "namespace": meta["namespace"],
            "labels": {**meta.get("labels", {}), ROLE_LABEL: role, ROLLOUT_LABEL: rollout},
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
    """A stable or canary copy, shaped as the target it was copied from."""
    source = copy.deepcopy(workload)
    source["metadata"]["name"] = target_name
    source["spec"]["selector"].get("matchLabels", {}).pop(ROLE_LABEL, None)
    source["spec"]["template"]["metadata"].get("labels", {}).pop(ROLE_LABEL, None)
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
        # spec.waves.revertOnLaterFailure: the stable copy's template is kept when a
        # promotion replaces it, so that the release before can be brought back.
        self.keep_previous = keep_previous
        self.namespace = namespace
        self.rollout = rollout
        self.target_name = target
        self.service_name = service
        self.port = port

    def name(self, role: Role) -> str:
        return f"{self.target_name}-{role}"

    def service(self, role: Role) -> str:
        return role_service(self.service_name, role)

    async def target(self) -> Obj | None:
        return await self.kube.read("deployments", self.namespace, self.target_name)

    def _check_owned(self, kind: str, found: Obj) -> None:
        """Raise NameConflict unless `found` carries this rollout's label."""
        labels = found["metadata"].get("labels") or {}
        if labels.get(ROLLOUT_LABEL) != self.rollout:
            name = found["metadata"]["name"]
            raise WorkloadError(
                f"{kind} {self.namespace}/{name} exists and was not made by tidegate for this "
                f"rollout (it lacks the label {ROLLOUT_LABEL}={self.rollout}); tidegate does "
                "not touch it: rename or delete it",
                reason="NameConflict",
            )

    async def observe(self, role: Role) -> tuple[Obj | None, WorkloadState | None]:
        found = await self.kube.read("deployments", self.namespace, self.name(role))
        if found is not None:
            self._check_owned("Deployment", found)
        return found, workload_state(found)

    async def ensure(self, role: Role, revision: str, replicas: int, target: Obj | None) -> None:
        existing, state = await self.observe(role)
        if state is not None and state.revision == revision:
            if state.replicas != replicas:
                await self.scale(role, replicas)
            return
        source = await self._template_source(revision, target)
        if role == "stable" and existing is not None and self.keep_previous:
            await self._keep(existing)
        desired = workload_copy(source, self.rollout, role, revision, replicas)
        await self.kube.apply(desired)

    async def _template_source(self, revision: str, target: Obj | None) -> Obj:
        """Where the pod template of `revision` can be copied from.

        Usually the target; but when the target moved on (or went) during a promotion, the
        canary copy still holds the revision being promoted.
        """
        if target is not None and template_revision(target["spec"]["template"]) == revision:
            return target
        for role in ("canary", "stable"):
            found, state = await self.observe(role)
            if found is not None and state is not None and state.revision == revision:
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

    def _kept_name(self) -> str:
        return f"{self.target_name}-previous-stable"

    async def _keep(self, stable: Obj) -> None:
        """Keep the stable copy's template (a ConfigMap owned by the rollout: one,
        overwritten at each promotion)."""
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
        found = await self.kube.get_or_none(
            f"configmaps {self.namespace}/{self._kept_name()}",
            self.kube.core.read_namespaced_config_map,
            self._kept_name(),
            self.namespace,
        )
        if found is None:
            return None
        labels = found["metadata"].get("labels") or {}
        data = found.get("data") or {}
        if labels.get(ROLLOUT_LABEL) != self.rollout or "deployment" not in data:
            return None
        source: Obj = json.loads(data["deployment"])
        source["metadata"]["namespace"] = self.namespace
        return data.get("revision", ""), source

    async def scale(self, role: Role, replicas: int) -> None:
        found, state = await self.observe(role)
        if found is None or state is None or state.replicas == replicas:
            return
        await self.kube.patch(
            "deployments", self.namespace, self.name(role), _scaled(found, replicas)
        )

    async def service_isolated(self) -> bool:
        found = await self.kube.read("services", self.namespace, self.service_name)
        if found is None:
            return True  # nothing selects the pods but tidegate's own Services
        selector = found.get("spec", {}).get("selector") or {}
        return bool(selector.get(ROLE_LABEL) == "stable")

    async def isolate_service(self) -> None:
        await self._select_role("stable")

    async def restore_service(self) -> bool:
        return await self._select_role(None)

    async def _select_role(self, role: Role | None) -> bool:
        """The user's Service's selector with the role label set to `role` (None: taken out),
        the rest as the user wrote it; False when it was so already."""
        found = await self.kube.read("services", self.namespace, self.service_name)
        if found is None:
            return False
        selector = found.get("spec", {}).get("selector") or {}
        if not selector or selector.get(ROLE_LABEL) == role:
            return False  # (a Service without a selector has endpoints of its own: untouched)
        patch = {
            "metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
            # A merge patch: the label set to None is removed.
            "spec": {"selector": {ROLE_LABEL: role}},
        }
        await self.kube.patch("services", self.namespace, self.service_name, patch)
        return True

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
        reference = owner_reference(owner)
        for role in ("stable", "canary"):
            copy_, _ = await self.observe(role)
            if copy_ is not None:
                await add_owner(self.kube, "deployments", self.namespace, copy_, reference)
            service = await self.kube.read("services", self.namespace, self.service(role))
            if service is not None:
                self._check_owned("Service", service)
                await add_owner(self.kube, "services", self.namespace, service, reference)

    async def ensure_services(self, target: Obj) -> None:
        """Create `<service>-stable` and `<service>-canary` if missing; ports as the user's."""
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
        for role in missing:
            service = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": self.service(role),
                    "namespace": self.namespace,
                    "labels": {ROLE_LABEL: role, ROLLOUT_LABEL: self.rollout},
                },
                "spec": {"selector": _role_labels(target, role), "ports": ports},
            }
            await self.kube.apply(service)
