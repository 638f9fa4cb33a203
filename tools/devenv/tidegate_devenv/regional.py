"""The canary example made regional, for waves (spec.waves) on the regions of
`tidegate_devenv.regions`: the same app and rollout in every region, each rollout's queries
reading only its own region's series (one Prometheus scrapes them all, with `cluster`), and
`waves.after` naming the region before it through the reader Secrets of
`tidegate_devenv.readers`. Used by the demo's `--waves` and by the e2e tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

import yaml

from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.readers import reader_secret_name

# The pod-template annotation that names a release when `waves.release` is
# `annotation:<key>` (regions whose manifests differ, as per-region overlays make them).
RELEASE_ANNOTATION = "example.com/release"


def wave_region(cluster: str, namespace: str, soak_seconds: int) -> dict[str, Any]:
    """An entry of waves.after or waves.before: region `cluster`'s rollout `shop`."""
    return {
        "cluster": cluster,
        "kubeconfigSecretRef": {"name": reader_secret_name(cluster)},
        "rollout": "shop",
        "namespace": namespace,
        "soak": f"{soak_seconds}s",
    }


def chain(names: list[str], namespace: str, soak_seconds: int) -> dict[str, dict[str, Any]]:
    """spec.waves of each region for a release walking the regions in this order."""
    waves: dict[str, dict[str, Any]] = {names[0]: {}}
    for before, name in itertools.pairwise(names):
        waves[name] = {"after": [wave_region(before, namespace, soak_seconds)]}
    return waves


def regional_rollout(cluster: str, waves: dict[str, Any], *, by_annotation: bool = False) -> str:
    """examples/canary's rollout for region `cluster`, with `waves` as its spec.waves (and
    `release: annotation:<RELEASE_ANNOTATION>` when `by_annotation`)."""
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    for metric in rollout["spec"]["analysis"]["metrics"]:
        metric["query"] = metric["query"].replace(
            'namespace="{{ namespace }}"', f'cluster="{cluster}", namespace="{{{{ namespace }}}}"'
        )
        if metric["name"] == "latency-p99":
            # Three control planes on a small machine: the error rate is what is shown.
            metric["thresholdRange"]["max"] = 2
    if by_annotation:
        waves = {"release": f"annotation:{RELEASE_ANNOTATION}", **waves}
    rollout["spec"]["waves"] = waves
    return yaml.safe_dump(rollout)


def regional_app(release: str | None = None, host: str | None = None) -> str:
    """examples/canary's app, its pod template annotated with `release` (if given), its
    route on `host` (if given)."""
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "Deployment" and release is not None:
            template = obj["spec"]["template"]["metadata"]
            template.setdefault("annotations", {})[RELEASE_ANNOTATION] = release
        if obj["kind"] == "HTTPRoute" and host is not None:
            obj["spec"]["hostnames"] = [host]
    return yaml.safe_dump_all(app)


def release_patch(version: str, error_rate: float = 0.0, release: str | None = None) -> str:
    """A merge patch of the shop Deployment's template: one change, as a GitOps sync makes
    it (VERSION, ERROR_RATE and the release annotation together)."""
    env = [{"name": "VERSION", "value": version}, {"name": "ERROR_RATE", "value": str(error_rate)}]
    template: dict[str, Any] = {"spec": {"containers": [{"name": "app", "env": env}]}}
    if release is not None:
        template["metadata"] = {"annotations": {RELEASE_ANNOTATION: release}}
    return json.dumps({"spec": {"template": template}})
