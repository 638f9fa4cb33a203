"""Render tidegate's CustomResourceDefinitions from the pydantic models: ProgressiveRollout,
MetricTemplate and ClusterMetricTemplate.

Pydantic emits JSON Schema with `$ref`s, `anyOf: [X, null]` for optional fields and other
constructs the API server rejects; `structural_schema` rewrites that into the structural
OpenAPI v3 subset Kubernetes requires.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel

from tidegate.api import (
    GROUP,
    KIND,
    LIST_KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    MetricTemplateKind,
    MetricTemplateSpec,
    RolloutSpec,
    RolloutStatus,
)

Schema = dict[str, Any]

CRD_NAME = f"{PLURAL}.{GROUP}"

_HEADER = (
    "# Generated from operator/tidegate/api.py by tidegate.crd.render_crd(); do not edit.\n"
    "# Regenerate with: tidegate crds > crds/progressiverollout.yaml\n"
)

_DROPPED_KEYS = {"title", "$defs"}
_NULL = {"type": "null"}
_EXCLUSIVE = {"exclusiveMinimum": "minimum", "exclusiveMaximum": "maximum"}


def structural_schema(model: type[BaseModel], *, keep_defaults: bool = True) -> Schema:
    """The model's JSON schema, with refs inlined and optionals made simply non-required.

    Only scalar defaults are kept: the API server applies them whenever the parent object is
    present, while object defaults would have to be complete, pruned values.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Schema] = raw.get("$defs", {})
    return _rewrite(raw, definitions, keep_defaults)


def _rewrite(node: Schema, definitions: dict[str, Schema], keep_defaults: bool) -> Schema:
    node = _flatten(node, definitions)
    out: Schema = {}
    if "type" not in node:
        raise ValueError(f"schema node without a type: {node}")
    out["type"] = node["type"]
    if "description" in node:
        out["description"] = " ".join(node["description"].split())
    for key, value in node.items():
        if key in _DROPPED_KEYS or key in out:
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields anyway
        if key == "default" and not (keep_defaults and _is_scalar(value)):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in _EXCLUSIVE:
            # pydantic writes JSON Schema's numeric form (exclusiveMinimum: 0); a CRD's
            # OpenAPI v3.0 schema takes the bound and a boolean beside it.
            out[_EXCLUSIVE[key]] = value
            out[key] = True
        elif key == "properties":
            out[key] = {
                name: _rewrite(child, definitions, keep_defaults) for name, child in value.items()
            }
        elif key == "items":
            out[key] = _rewrite(value, definitions, keep_defaults)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(node: Schema, definitions: dict[str, Schema]) -> Schema:
    """Inline `$ref` and collapse `anyOf: [X, {type: null}]` into X, keeping sibling keys."""
    while True:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**definitions[name], **siblings}
        elif "anyOf" in node:
            choices = [choice for choice in node["anyOf"] if choice != _NULL]
            if len(choices) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            siblings = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**choices[0], **siblings}
        else:
            return node


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def openapi_schema() -> Schema:
    """The whole object's schema (openAPIV3Schema of the CRD version)."""
    return {
        "type": "object",
        "description": "A canary rollout of a Deployment, gated on Prometheus metrics.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(RolloutSpec),
            "status": structural_schema(RolloutStatus, keep_defaults=False),
        },
        "required": ["spec"],
    }


def _printer_column(name: str, type_: str, path: str) -> dict[str, str]:
    return {"name": name, "type": type_, "jsonPath": path}


PRINTER_COLUMNS = [
    _printer_column("Phase", "string", ".status.phase"),
    _printer_column("Weight", "integer", ".status.canaryWeight"),
    _printer_column("Step", "integer", ".status.currentStepIndex"),
    _printer_column("Stable", "string", ".status.stableRevision"),
    _printer_column("Canary", "string", ".status.canaryRevision"),
    _printer_column("Age", "date", ".metadata.creationTimestamp"),
]


def crd_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as YAML; the same models always give the same text."""
    body = yaml.safe_dump(crd_manifest(), sort_keys=False, width=1000, allow_unicode=True)
    return _HEADER + body


# --- metric templates -----------------------------------------------------------------------

# The file (under crds/, and the Helm chart's crds/) of each CRD, by kind.
CRD_FILES: dict[str, str] = {
    KIND: "progressiverollout.yaml",
    MetricTemplateKind.NAMESPACED.value: "metrictemplate.yaml",
    MetricTemplateKind.CLUSTER.value: "clustermetrictemplate.yaml",
}

_TEMPLATE_DESCRIPTIONS = {
    MetricTemplateKind.NAMESPACED: "A reusable metric query with arguments, for the "
    "ProgressiveRollouts of its namespace (spec.analysis.metrics[].templateRef).",
    MetricTemplateKind.CLUSTER: "A reusable metric query with arguments, for the "
    "ProgressiveRollouts of every namespace (templateRef.kind: ClusterMetricTemplate).",
}
_TEMPLATE_SHORT_NAMES = {
    MetricTemplateKind.NAMESPACED: ["mtpl"],
    MetricTemplateKind.CLUSTER: ["cmtpl"],
}


def template_crd_manifest(kind: MetricTemplateKind) -> dict[str, Any]:
    plural = f"{kind.value.lower()}s"
    cluster = kind is MetricTemplateKind.CLUSTER
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.value,
                "listKind": f"{kind.value}List",
                "plural": plural,
                "singular": kind.value.lower(),
                "shortNames": list(_TEMPLATE_SHORT_NAMES[kind]),
            },
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        _printer_column("Age", "date", ".metadata.creationTimestamp")
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": _TEMPLATE_DESCRIPTIONS[kind],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural_schema(MetricTemplateSpec),
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def _header(kind: str) -> str:
    return (
        "# Generated from operator/tidegate/api.py by tidegate.crd; do not edit.\n"
        f"# Regenerate with: tidegate crds --write crds (this is crds/{CRD_FILES[kind]})\n"
    )


def render_crds() -> dict[str, str]:
    """Every CRD as YAML, by file name (see CRD_FILES)."""
    rendered = {CRD_FILES[KIND]: render_crd()}
    for kind in MetricTemplateKind:
        body = yaml.safe_dump(
            template_crd_manifest(kind), sort_keys=False, width=1000, allow_unicode=True
        )
        rendered[CRD_FILES[kind.value]] = _header(kind.value) + body
    return rendered
