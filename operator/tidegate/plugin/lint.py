"""`kubectl tidegate lint`: manifests checked offline, by the rules the operator applies."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from tidegate import api
from tidegate.adapters.wiring import router_capabilities
from tidegate.validation import Problem, field_path, spec_problems, template_problems

TEMPLATE_KINDS = frozenset(kind.value for kind in api.MetricTemplateKind)


def document_problems(document: dict[str, Any]) -> list[Problem]:
    """A ProgressiveRollout's or metric template's problems; other kinds have none here
    (kubectl checks them). Offline, a rollout's templateRef cannot be looked up: its shape
    is checked, and the operator says when the template is missing or does not fit."""
    kind = document.get("kind")
    if kind != api.KIND and kind not in TEMPLATE_KINDS:
        return []
    problems = []
    if document.get("apiVersion") != api.API_VERSION:
        problems.append(
            Problem("apiVersion", f"{document.get('apiVersion')!r} is not {api.API_VERSION!r}")
        )
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        problems.append(Problem(field_path("metadata", ("name",)), "a name is required"))
    spec = document.get("spec")
    if not isinstance(spec, dict):
        problems.append(Problem("spec", "a spec is required"))
        return problems
    if kind in TEMPLATE_KINDS:
        return problems + template_problems(spec)
    _, found = spec_problems(spec, router_capabilities)
    return problems + found


def lint_file(path: Path) -> tuple[int, int, list[str]]:
    """(rollouts checked, metric templates checked, a line per problem) for one file."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except OSError as error:
        return 0, 0, [f"{path}: cannot read: {error.strerror}"]
    except yaml.YAMLError as error:
        return 0, 0, [f"{path}: not YAML: {error}".replace("\n", " ")]
    checked, templates, lines = 0, 0, []
    for index, document in enumerate(documents):
        if document is None:
            continue
        if not isinstance(document, dict):
            lines.append(f"{path}: document {index + 1}: not a Kubernetes object")
            continue
        if document.get("kind") == api.KIND:
            checked += 1
        elif document.get("kind") in TEMPLATE_KINDS:
            templates += 1
        name = (document.get("metadata") or {}).get("name", "?")
        where = f"{path}: document {index + 1} ({document.get('kind')} {name})"
        lines += [f"{where}: {problem}" for problem in document_problems(document)]
    return checked, templates, lines


def lint(paths: Iterable[Path]) -> tuple[list[str], list[str]]:
    """(problem lines, a summary line per file)."""
    problems, summary = [], []
    for path in paths:
        checked, templates, found = lint_file(path)
        problems += found
        state = "ok" if not found else f"{len(found)} problem(s)"
        also = f", {templates} metric template(s)" if templates else ""
        summary.append(f"{path}: {checked} ProgressiveRollout(s){also}, {state}")
    return problems, summary
