"""Metric queries made whole: a rollout's variables filled in, and a metric that names a
MetricTemplate or ClusterMetricTemplate turned into the query and bounds it stands for.

Pure: the template is handed in (the reconciler reads it from the watch-fed cache), and
every problem is a `TemplateProblem` whose reason and message go on the rollout as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tidegate import api

# `{{ name }}` for a rollout variable, `{{ args.name }}` for a template argument.
_PLACEHOLDER = re.compile(r"\{\{\s*((?:args\.)?\w+)\s*\}\}")
ARGS_PREFIX = "args."


class UnknownVariable(KeyError):
    """A placeholder names nothing known."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def render(text: str, values: Mapping[str, str]) -> str:
    """`text` with each `{{ name }}` replaced by `values[name]`, in one pass: what a value
    contains is never read as a placeholder. Raises UnknownVariable."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise UnknownVariable(f"unknown variable {{{{ {name} }}}}; known: {known}")
        return values[name]

    return _PLACEHOLDER.sub(substitute, text)


def placeholders(text: str) -> list[str]:
    """The names `text` refers to, in order, each once."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(text)))


class TemplateProblem(ValueError):
    """Why a metric's template cannot give a query: `reason` is one CamelCase word for the
    Degraded condition and the Event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def describe_ref(ref: api.TemplateRef, namespace: str) -> str:
    """`MetricTemplate ns/name` or `ClusterMetricTemplate name`."""
    if ref.kind is api.MetricTemplateKind.CLUSTER:
        return f"{ref.kind.value} {ref.name}"
    return f"{ref.kind.value} {namespace}/{ref.name}"


def parse_template(obj: Mapping[str, Any], what: str) -> api.MetricTemplateSpec:
    """The spec of a stored template; TemplateProblem (InvalidTemplate) when it does not
    parse (the API server checks the same schema, so only an older or edited CRD lets one
    through)."""
    try:
        return api.MetricTemplateSpec.model_validate(obj.get("spec") or {})
    except ValidationError as error:
        text = "; ".join(
            f"spec{''.join(f'.{p}' if isinstance(p, str) else f'[{p}]' for p in e['loc'])}: "
            f"{e['msg']}"
            for e in error.errors()
        )
        raise TemplateProblem("InvalidTemplate", f"{what} is invalid: {text}") from None


def resolve(
    metric: api.Metric,
    template: Mapping[str, Any] | None,
    variables: Mapping[str, str],
    *,
    namespace: str,
    field: str,
) -> api.Metric:
    """The metric as a plain query (every placeholder filled in) and its bounds.

    `template` is the stored object `metric.templateRef` names (None: it does not exist);
    `variables` are the rollout's query variables; `field` is the metric's path in the spec,
    for messages. A metric with its own query is returned as it is. Raises TemplateProblem:
    TemplateNotFound, InvalidTemplate, or InvalidSpec (an argument missing, unknown, or
    using an unknown variable; no thresholdRange anywhere).
    """
    ref = metric.template_ref
    if ref is None:
        return metric
    what = describe_ref(ref, namespace)
    subject = f'{field} (metric "{metric.name}")'
    if template is None:
        raise TemplateProblem("TemplateNotFound", f"{subject}: {what} does not exist")
    spec = parse_template(template, what)

    declared = {arg.name: arg.value for arg in spec.args}
    given = {arg.name: arg.value for arg in metric.args or ()}
    unknown = [name for name in given if name not in declared]
    if unknown:
        names = ", ".join(f'"{n}"' for n in unknown)
        offered = ", ".join(f'"{n}"' for n in declared) or "none"
        raise TemplateProblem(
            "InvalidSpec",
            f"{subject}: {what} has no argument {names} (its arguments: {offered})",
        )
    missing = [name for name, default in declared.items() if default is None and name not in given]
    if missing:
        names = ", ".join(f'"{n}"' for n in missing)
        raise TemplateProblem(
            "InvalidSpec",
            f"{subject}: {what} needs a value for argument {names}, which has no default; "
            f"set it in {field}.args",
        )
    undeclared = [
        name[len(ARGS_PREFIX) :]
        for name in placeholders(spec.query)
        if name.startswith(ARGS_PREFIX) and name[len(ARGS_PREFIX) :] not in declared
    ]
    if undeclared:
        names = ", ".join(f'"{n}"' for n in undeclared)
        raise TemplateProblem(
            "InvalidTemplate", f"{what}: its query uses argument {names}, not in its spec.args"
        )

    arguments: dict[str, str] = {}
    for name, default in declared.items():
        value = given.get(name, default)
        assert value is not None  # checked above
        source = f"{field}.args {name}" if name in given else f"{what}'s default for {name}"
        try:
            arguments[ARGS_PREFIX + name] = render(value, variables)
        except UnknownVariable as error:
            raise TemplateProblem("InvalidSpec", f"{subject}: {source}: {error}") from None
    try:
        # Rollout variables and arguments in one pass: an argument's value (already filled
        # in) is never read again.
        query = render(spec.query, {**variables, **arguments})
    except UnknownVariable as error:
        raise TemplateProblem("InvalidTemplate", f"{what}: its query: {error}") from None

    bounds = metric.threshold_range or spec.threshold_range
    if bounds is None:
        raise TemplateProblem(
            "InvalidSpec",
            f"{subject}: neither the metric nor {what} sets a thresholdRange",
        )
    return api.Metric(name=metric.name, query=query, threshold_range=bounds)
