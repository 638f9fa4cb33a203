"""`kubectl tidegate convert`: Flagger and Argo Rollouts manifests as tidegate's.

Pure: parsed YAML documents in, YAML text out. `convert` converts the templates first, so
that a Canary or Rollout knows which of its templates were, then each Flagger `Canary`
(module `flagger`) and Argo `Rollout` (module `argo`); other kinds are left out and listed
in a comment. Each field with no counterpart is named in a `# TODO: <field>` comment above
the object that would have held it; `render` (module `output`) writes the YAML stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from tidegate.plugin.convert.argo import ARGO_GROUP, ArgoMetric, argo_rollout, argo_templates
from tidegate.plugin.convert.flagger import FLAGGER_GROUP, flagger_canary, flagger_template
from tidegate.plugin.convert.output import ConvertError, Output, describe, name_of, render

__all__ = ["ConvertError", "Output", "convert", "convert_text", "render"]


def _kind(doc: Mapping[str, Any]) -> str:
    """What a document is to the converter ("" for what it leaves out)."""
    group, kind = str(doc.get("apiVersion", "")), doc.get("kind")
    if group.startswith(FLAGGER_GROUP):
        return {"MetricTemplate": "flagger template", "Canary": "canary"}.get(str(kind), "")
    if group.startswith(ARGO_GROUP):
        if kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
            return "argo template"
        return "rollout" if kind == "Rollout" else ""
    return ""


def convert(documents: Iterable[Any]) -> tuple[list[Output], list[str]]:
    """(the objects made, the documents left out). Templates are converted first, so that a
    Canary or Rollout knows which of its templates were."""
    docs = [d for d in documents if d is not None]
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConvertError(f"document {index + 1}: not a Kubernetes object")
    flagger_templates: dict[str, Output] = {}
    argo: dict[str, list[ArgoMetric]] = {}
    services = {name_of(d): d for d in docs if d.get("kind") == "Service"}
    outputs: list[Output] = []
    for doc in docs:
        if _kind(doc) == "flagger template":
            flagger_templates[name_of(doc)] = flagger_template(doc)
            outputs.append(flagger_templates[name_of(doc)])
        elif _kind(doc) == "argo template":
            argo[name_of(doc)] = argo_templates(doc)
            outputs += [m.out for m in argo[name_of(doc)]]
    skipped: list[str] = []
    for doc in docs:
        if _kind(doc) == "canary":
            outputs += flagger_canary(doc, flagger_templates)
        elif _kind(doc) == "rollout":
            outputs += argo_rollout(doc, argo, services)
        elif not _kind(doc):
            skipped.append(describe(doc))
    return outputs, skipped


def convert_text(texts: Iterable[str]) -> str:
    """YAML streams in, the converted YAML stream out. Raises ConvertError."""
    documents: list[Any] = []
    for text in texts:
        try:
            documents += list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            raise ConvertError(f"not YAML: {error}".replace("\n", " ")) from None
    outputs, skipped = convert(documents)
    if not outputs:
        raise ConvertError("no Flagger Canary or MetricTemplate, nor Argo Rollout or template")
    return render(outputs, skipped)
