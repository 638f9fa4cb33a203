"""`kubectl tidegate convert`: Flagger and Argo Rollouts manifests as tidegate's.

Pure: parsed YAML documents in, YAML text out. A Flagger `Canary` becomes a
ProgressiveRollout (and, with the Gateway API provider, the HTTPRoute Flagger made); a
Flagger `MetricTemplate` a MetricTemplate. An Argo `Rollout` becomes a Deployment (unless
it already points at one with workloadRef) and a ProgressiveRollout; an `AnalysisTemplate`
(or `ClusterAnalysisTemplate`) one MetricTemplate (or ClusterMetricTemplate) per metric.
Each field with no counterpart is named in a `# TODO: <field>` comment above the object
that would have held it. Other kinds are left out and listed in a comment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tidegate import api
from tidegate.durations import parse_duration

Obj = dict[str, Any]

FLAGGER_GROUP = "flagger.app/"
ARGO_GROUP = "argoproj.io/"
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ARGO_GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"

# Flagger's webhook types and tidegate's. confirm-rollout and event have none.
FLAGGER_WEBHOOKS = {
    "pre-rollout": api.WebhookType.PRE_ROLLOUT,
    "rollout": api.WebhookType.ROLLOUT,
    "confirm-traffic-increase": api.WebhookType.CONFIRM_TRAFFIC_INCREASE,
    "confirm-promotion": api.WebhookType.CONFIRM_PROMOTION,
    "post-rollout": api.WebhookType.POST_ROLLOUT,
    "rollback": api.WebhookType.ROLLBACK,
}
# Flagger's metrics that need no template: they are written for a mesh or an ingress.
FLAGGER_BUILTIN_METRICS = ("request-success-rate", "request-duration")


class ConvertError(ValueError):
    """A document that cannot be converted at all."""


@dataclass
class Output:
    """One object to write, and the TODO lines to put above it."""

    obj: Obj
    source: str
    todos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def todo(self, path: str, why: str) -> None:
        self.todos.append(f"{path}: {why}")


def _name(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name") or "")


def _meta(doc: Mapping[str, Any], name: str | None = None) -> Obj:
    source = doc.get("metadata") or {}
    meta: Obj = {"name": name or source.get("name")}
    if source.get("namespace"):
        meta["namespace"] = source["namespace"]
    return meta


def _describe(doc: Mapping[str, Any]) -> str:
    namespace = (doc.get("metadata") or {}).get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{doc.get('apiVersion')} {doc.get('kind')} {where}{_name(doc)}"


def _leftover(out: Output, path: str, section: Mapping[str, Any], known: Iterable[str]) -> None:
    """A TODO for each key of `section` not in `known`."""
    taken = set(known)
    for key in section:
        if key not in taken:
            out.todo(f"{path}.{key}", "no counterpart in tidegate")


def _arg_name(name: str) -> str:
    """An argument name as tidegate spells them (letters, digits and _)."""
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return fixed if re.match(r"[A-Za-z_]", fixed) else f"_{fixed}"


def _duration(value: Any) -> str:
    """A duration as tidegate writes it; Argo also takes a bare number of seconds."""
    if isinstance(value, int | float):
        return f"{int(value)}s"
    return str(value)


def _seconds(value: Any) -> float:
    return parse_duration(_duration(value)).total_seconds()


# --- Flagger ---------------------------------------------------------------------------------

_FLAGGER_VARIABLE = re.compile(r"\{\{\s*([\w.]+)\s*\}\}(-canary|-primary)?")


def _flagger_query(query: str, out: Output) -> tuple[str, list[str]]:
    """A Flagger template query in tidegate's variables, and the arguments it now needs.
    `{{ target }}-canary` and `-primary` are Flagger's Services of the target; tidegate's
    are `{{ canaryService }}` and `{{ stableService }}`."""
    args: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        name, suffix = match.group(1), match.group(2) or ""
        if name == "target" and suffix:
            return "{{ canaryService }}" if suffix == "-canary" else "{{ stableService }}"
        if name in ("target", "namespace", "interval"):
            return f"{{{{ {name} }}}}{suffix}"
        if name.startswith("variables."):
            arg = _arg_name(name.removeprefix("variables."))
        else:
            arg = _arg_name(name)
            out.todo(
                f"spec.query {{{{ {name} }}}}",
                f"no such variable in tidegate; now the argument {arg}, which each rollout "
                "using the template must give",
            )
        if arg not in args:
            args.append(arg)
        return f"{{{{ args.{arg} }}}}{suffix}"

    return _FLAGGER_VARIABLE.sub(rewrite, query), args


def flagger_template(doc: Mapping[str, Any]) -> Output:
    spec = doc.get("spec") or {}
    out = Output({}, _describe(doc))
    provider = spec.get("provider") or {}
    kind = provider.get("type", "prometheus")
    if kind != "prometheus" or not spec.get("query"):
        out.todo("spec.provider.type", f"{kind}: only Prometheus queries have a counterpart")
        return out
    query, args = _flagger_query(str(spec["query"]), out)
    out.obj = {
        "apiVersion": api.API_VERSION,
        "kind": api.MetricTemplateKind.NAMESPACED.value,
        "metadata": _meta(doc),
        "spec": {"query": query, **({"args": [{"name": a} for a in args]} if args else {})},
    }
    if provider.get("address"):
        out.todo(
            "spec.provider.address",
            f"{provider['address']}: a template has no address; set spec.analysis.prometheus."
            "address on the rollouts that use it, unless the operator's --prometheus-url is it",
        )
    _leftover(out, "spec.provider", provider, ("type", "address"))
    _leftover(out, "spec", spec, ("provider", "query"))
    return out


def _flagger_match(entries: list[Any], out: Output, path: str) -> list[Obj] | None:
    """Flagger's `match` (any entry) as tidegate's header match (all entries must match):
    only one entry of headers converts."""
    if len(entries) != 1:
        out.todo(path, "more than one entry (any of them); tidegate matches one set of headers")
        return None
    entry = entries[0] or {}
    _leftover(out, f"{path}[0]", entry, ("headers",))
    found = []
    for header, rule in (entry.get("headers") or {}).items():
        if "exact" in rule:
            value = {"exact": str(rule["exact"])}
        elif "regex" in rule:
            value = {"regex": str(rule["regex"])}
        elif "prefix" in rule:
            value = {"regex": "^" + re.escape(str(rule["prefix"]))}
        else:
            out.todo(f"{path}[0].headers.{header}", "only exact, regex and prefix convert")
            continue
        found.append({"headerName": header, "headerValue": value})
    return found or None


def flagger_canary(doc: Mapping[str, Any], templates: Mapping[str, Output]) -> list[Output]:
    spec = doc.get("spec") or {}
    out = Output({}, _describe(doc))
    target = spec.get("targetRef") or {}
    if target.get("kind", "Deployment") != "Deployment":
        raise ConvertError(f"{out.source}: targets a {target.get('kind')}; only a Deployment")
    service_in = spec.get("service") or {}
    service = str(service_in.get("name") or target.get("name"))
    rollout: Obj = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target.get("name")},
        "service": {"name": service, "port": service_in.get("port", 80)},
        "trafficRouting": {"gatewayAPI": {"httpRoute": service}},
    }
    if "port" not in service_in:
        out.todo("spec.service.port", "not set; 80 assumed")
    if service != target.get("name"):
        out.todo(
            "spec.service.name",
            f"{service} is not the target's name: a template's {{{{ target }}}}-canary was "
            "converted to {{ canaryService }}, which is " + f"{service}-canary",
        )
    for key in ("progressDeadlineSeconds", "skipAnalysis"):
        if key in spec:
            rollout[key] = spec[key]
    if spec.get("suspend"):
        rollout["paused"] = True
    autoscaler = spec.get("autoscalerRef") or {}
    if autoscaler.get("kind") == "HorizontalPodAutoscaler":
        rollout["autoscalerRef"] = {"name": autoscaler.get("name")}
        _leftover(out, "spec.autoscalerRef", autoscaler, ("apiVersion", "kind", "name"))
    elif autoscaler:
        out.todo("spec.autoscalerRef", f"a {autoscaler.get('kind')}; only an HPA converts")
    _leftover(
        out, "spec.service", service_in,
        ("name", "port", "targetPort", "portName", "hosts", "gatewayRefs"),
    )  # fmt: skip
    _leftover(
        out, "spec", spec,
        ("targetRef", "service", "analysis", "progressDeadlineSeconds", "skipAnalysis",
         "suspend", "autoscalerRef", "revertOnDeletion", "provider"),
    )  # fmt: skip
    outputs = [out]
    out.warnings.append(
        f"Flagger's Services {service}-canary and {service}-primary: tidegate makes its own "
        f"{service}-canary and will not take Flagger's over; delete both once the Canary "
        "is gone (docs/migrating.md)"
    )
    provider = str(spec.get("provider") or "")
    if service_in.get("gatewayRefs") or provider.startswith("gatewayapi"):
        outputs.append(_flagger_route(doc, service, rollout["service"]["port"], service_in))
    elif provider:
        out.todo(
            "spec.provider",
            f"{provider}: tidegate routes with a Gateway API HTTPRoute named {service} (rule 0) "
            f"whose backendRefs tidegate owns; write it",
        )
    else:
        out.todo(
            "spec.provider",
            f"not set: tidegate routes with a Gateway API HTTPRoute named {service} (rule 0); "
            "write it",
        )

    analysis = spec.get("analysis") or {}
    rollout["analysis"], rollout["strategy"] = _flagger_analysis(
        analysis, out, templates, (doc.get("metadata") or {}).get("namespace")
    )
    webhooks = _flagger_webhooks(analysis.get("webhooks") or [], out)
    if webhooks:
        rollout["webhooks"] = webhooks
    out.obj = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": _meta(doc),
        "spec": rollout,
    }
    return outputs


def _flagger_route(doc: Mapping[str, Any], service: str, port: Any, svc: Obj) -> Output:
    """The HTTPRoute Flagger made for the Canary, pointed at the user's Service."""
    out = Output({}, _describe(doc))
    route: Obj = {"rules": [{"backendRefs": [{"name": service, "port": port}]}]}
    if svc.get("gatewayRefs"):
        route["parentRefs"] = svc["gatewayRefs"]
    if svc.get("hosts"):
        route["hostnames"] = svc["hosts"]
    out.obj = {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": _meta(doc, service),
        "spec": route,
    }
    return out


def _flagger_analysis(
    analysis: Mapping[str, Any],
    out: Output,
    templates: Mapping[str, Output],
    namespace: str | None,
) -> tuple[Obj, Obj]:
    """(spec.analysis, spec.strategy) for a Flagger Canary's analysis."""
    result: Obj = {}
    if "interval" in analysis:
        result["interval"] = _duration(analysis["interval"])
    if "threshold" in analysis:
        # Both roll back when the failed checks reach the number.
        result["failureLimit"] = analysis["threshold"]
    metrics = []
    for index, metric in enumerate(analysis.get("metrics") or []):
        converted = _flagger_metric(
            metric, f"spec.analysis.metrics[{index}]", out, templates, namespace
        )
        if converted:
            if (
                metric.get("interval")
                and "interval" in result
                and _seconds(metric["interval"]) != _seconds(result["interval"])
            ):
                out.todo(
                    f"spec.analysis.metrics[{index}].interval",
                    "tidegate measures every metric each spec.analysis.interval",
                )
            metrics.append(converted)
    if metrics:
        result["metrics"] = metrics

    strategy: Obj
    iterations = analysis.get("iterations")
    if analysis.get("stepWeights"):
        strategy = {"canary": {"steps": [{"setWeight": w} for w in analysis["stepWeights"]]}}
    elif analysis.get("stepWeight") or analysis.get("maxWeight"):
        for key, default in (("stepWeight", 10), ("maxWeight", 100)):
            if not analysis.get(key):
                out.todo(f"spec.analysis.{key}", f"not set; {default} written")
        strategy = {
            "canary": {
                "stepWeight": analysis.get("stepWeight", 10),
                "maxWeight": analysis.get("maxWeight", 100),
            }
        }
    elif iterations and analysis.get("match"):  # A/B testing
        steps: list[Obj] = []
        match = _flagger_match(analysis["match"], out, "spec.analysis.match")
        if match:
            steps.append({"setHeaderRoute": {"match": match}})
        steps.append({"analysis": {"iterations": iterations}})
        strategy = {"canary": {"steps": steps}}
    elif iterations and analysis.get("mirror"):
        strategy = {
            "canary": {
                "steps": [
                    {"setMirrorRoute": {"percentage": analysis.get("mirrorWeight", 100)}},
                    {"analysis": {"iterations": iterations}},
                ]
            }
        }
    elif iterations:  # blue/green
        strategy = {"blueGreen": {"prePromotionAnalysis": {"iterations": iterations}}}
    else:
        out.todo("spec.analysis", "no stepWeights, stepWeight, maxWeight or iterations")
        strategy = {"canary": {"steps": [{"pause": {}}]}}
    if (analysis.get("match") or analysis.get("mirror")) and not iterations:
        out.todo("spec.analysis.match/mirror", "only converted with iterations")
    _leftover(
        out, "spec.analysis", analysis,
        ("interval", "threshold", "metrics", "webhooks", "stepWeights", "stepWeight",
         "maxWeight", "iterations", "match", "mirror", "mirrorWeight"),
    )  # fmt: skip
    return result, strategy


def _flagger_metric(
    metric: Mapping[str, Any],
    path: str,
    out: Output,
    templates: Mapping[str, Output],
    namespace: str | None,
) -> Obj | None:
    name = metric.get("name")
    ref = metric.get("templateRef")
    if not ref and metric.get("query"):
        query, args = _flagger_query(str(metric["query"]), out)
        converted: Obj = {"name": name, "query": query}
        if args:
            out.todo(f"{path}.query", f"uses {', '.join(args)}; put the query in a template")
    elif ref:
        template = templates.get(ref.get("name", ""))
        if template is not None and not template.obj:
            out.todo(path, f"its template {ref.get('name')} was not converted; metric left out")
            return None
        converted = {"name": name, "templateRef": {"name": ref.get("name")}}
        if ref.get("namespace") and ref["namespace"] != namespace:
            out.todo(
                f"{path}.templateRef.namespace",
                "a MetricTemplate is read from the rollout's namespace; copy it there, or "
                "make it a ClusterMetricTemplate (templateRef.kind)",
            )
        variables = metric.get("templateVariables") or {}
        if variables:
            converted["args"] = [
                {"name": _arg_name(k), "value": str(v)} for k, v in variables.items()
            ]
    else:
        if name in FLAGGER_BUILTIN_METRICS:
            why = "Flagger's built-in metric for a mesh or ingress; write its query"
        else:
            why = "neither a query nor a templateRef"
        out.todo(f"{path} ({name})", f"{why}; metric left out")
        return None
    if metric.get("thresholdRange"):
        converted["thresholdRange"] = dict(metric["thresholdRange"])
    elif "query" in converted:
        out.todo(f"{path}.thresholdRange", "required with a query")
    _leftover(
        out, path, metric,
        ("name", "templateRef", "templateVariables", "thresholdRange", "interval", "query"),
    )  # fmt: skip
    return converted


def _flagger_webhooks(webhooks: list[Any], out: Output) -> list[Obj]:
    converted = []
    for index, hook in enumerate(webhooks):
        path = f"spec.analysis.webhooks[{index}]"
        kind = hook.get("type") or "rollout"  # Flagger's default
        if kind not in FLAGGER_WEBHOOKS:
            out.todo(f"{path}.type", f"{kind} ({hook.get('name')}): no counterpart; left out")
            continue
        entry: Obj = {
            "name": hook.get("name"),
            "type": FLAGGER_WEBHOOKS[kind].value,
            "url": hook.get("url"),
        }
        if hook.get("timeout"):
            timeout = _duration(hook["timeout"])
            if _seconds(timeout) > _seconds(api.WEBHOOK_TIMEOUT_MAX):
                out.todo(f"{path}.timeout", f"{timeout}: tidegate waits at most 5m")
                timeout = api.WEBHOOK_TIMEOUT_MAX
            entry["timeout"] = timeout
        if hook.get("metadata"):
            entry["metadata"] = {str(k): str(v) for k, v in hook["metadata"].items()}
        _leftover(out, path, hook, ("name", "type", "url", "timeout", "metadata"))
        converted.append(entry)
    if converted:
        out.todo(
            "spec.analysis.webhooks",
            "tidegate's request body is its own (docs/api.md, Webhooks): check the endpoints",
        )
    return converted


# --- Argo Rollouts ---------------------------------------------------------------------------

_ARGO_ARG = re.compile(r"\{\{\s*args\.([\w.-]+)\s*\}\}")
_CONDITION = re.compile(r"^\s*result(?:\[0\])?\s*(<=|<|>=|>)\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")


@dataclass
class ArgoMetric:
    """One metric of an AnalysisTemplate, as a tidegate template."""

    template: str  # tidegate's template name
    metric: str
    kind: str
    out: Output
    interval: str | None
    failure_limit: int
    consecutive_error_limit: int | None
    count: int | None


def _threshold(success: str | None, failure: str | None, out: Output, path: str) -> Obj | None:
    """Argo's successCondition or failureCondition as a thresholdRange, when each term is a
    bound on result (or result[0])."""
    bounds: Obj = {}
    for key, text, upper_ops, joiner in (
        ("successCondition", success, ("<=", "<"), "&&"),
        ("failureCondition", failure, (">=", ">"), "||"),
    ):
        if not text:
            continue
        for term in str(text).split(joiner):
            found = _CONDITION.match(term)
            if not found:
                out.todo(f"{path}.{key}", f"{text!r}: only bounds on result[0] convert")
                return None
            op, value = found.group(1), float(found.group(2))
            strict = op in ("<", ">") if joiner == "&&" else op in ("<=", ">=")
            if strict:
                out.todo(f"{path}.{key}", f"{term.strip()}: tidegate's bounds are inclusive")
            bounds["max" if op in upper_ops else "min"] = value
    return bounds or None


def argo_templates(doc: Mapping[str, Any]) -> list[ArgoMetric]:
    """One tidegate template per metric of an Argo AnalysisTemplate."""
    spec = doc.get("spec") or {}
    cluster = doc.get("kind") == "ClusterAnalysisTemplate"
    kind = (api.MetricTemplateKind.CLUSTER if cluster else api.MetricTemplateKind.NAMESPACED).value
    metrics = spec.get("metrics") or []
    declared: dict[str, Obj] = {str(a.get("name")): a for a in spec.get("args") or []}
    found = []
    for index, metric in enumerate(metrics):
        out = Output({}, f"{_describe(doc)} metric {metric.get('name')}")
        path = f"spec.metrics[{index}]"
        name = _name(doc) if len(metrics) == 1 else f"{_name(doc)}-{metric.get('name')}"
        prometheus = (metric.get("provider") or {}).get("prometheus")
        entry = ArgoMetric(
            name, str(metric.get("name")), kind, out,
            _duration(metric["interval"]) if metric.get("interval") else None,
            int(metric.get("failureLimit", 0)), metric.get("consecutiveErrorLimit"),
            metric.get("count"),
        )  # fmt: skip
        found.append(entry)
        if not prometheus or not prometheus.get("query"):
            providers = ", ".join(metric.get("provider") or {}) or "none"
            out.todo(f"{path}.provider", f"{providers}: only Prometheus queries convert")
            continue
        used: list[str] = []

        def rename(match: re.Match[str], used: list[str] = used) -> str:
            arg = match.group(1)
            if arg not in used:
                used.append(arg)
            return f"{{{{ args.{_arg_name(arg)} }}}}"

        query = _ARGO_ARG.sub(rename, str(prometheus["query"]))
        args = []
        for arg in used:
            entry_arg: Obj = {"name": _arg_name(arg)}
            given = declared.get(arg) or {}
            if "value" in given:
                entry_arg["value"] = str(given["value"])
            elif given.get("valueFrom"):
                out.todo(f"spec.args.{arg}.valueFrom", "no counterpart; give it a value")
            args.append(entry_arg)
        template: Obj = {"query": query}
        if args:
            template["args"] = args
        bounds = _threshold(
            metric.get("successCondition"), metric.get("failureCondition"), out, path
        )
        if bounds:
            template["thresholdRange"] = bounds
        out.obj = {
            "apiVersion": api.API_VERSION,
            "kind": kind,
            "metadata": _meta(doc, name),
            "spec": template,
        }
        if prometheus.get("address"):
            out.todo(
                f"{path}.provider.prometheus.address",
                f"{prometheus['address']}: set spec.analysis.prometheus.address on the "
                "rollouts that use it, unless the operator's --prometheus-url is it",
            )
        _leftover(out, f"{path}.provider.prometheus", prometheus, ("address", "query"))
        _leftover(
            out, path, metric,
            ("name", "provider", "interval", "successCondition", "failureCondition",
             "failureLimit", "consecutiveErrorLimit", "count"),
        )  # fmt: skip
    _leftover(found[0].out if found else Output({}, ""), "spec", spec, ("args", "metrics"))
    return found


@dataclass
class _ArgoAnalysis:
    """What an Argo Rollout's analyses add up to in tidegate."""

    metrics: list[Obj] = field(default_factory=list)
    intervals: set[float] = field(default_factory=set)
    interval: str | None = None
    failure_limits: set[int] = field(default_factory=set)
    error_limits: set[int] = field(default_factory=set)
    rollout: str = ""  # the Rollout's name, for a fieldRef to metadata.name


def _argo_analysis(
    ref: Mapping[str, Any],
    path: str,
    out: Output,
    templates: Mapping[str, list[ArgoMetric]],
    into: _ArgoAnalysis,
) -> int:
    """Adds the metrics of an Argo analysis (templates and args) to `into`; returns the
    largest `count` among them (the measurements an inline analysis step waits for)."""
    given: dict[str, str] = {}
    for arg in ref.get("args") or []:
        arg_name = str(arg.get("name"))
        if "value" in arg:
            given[arg_name] = str(arg["value"])
            continue
        field_ref = ((arg.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_ref == "metadata.namespace":
            given[arg_name] = "{{ namespace }}"
        elif field_ref == "metadata.name":
            given[arg_name] = into.rollout
        else:
            out.todo(
                f"{path}.args.{arg_name}.valueFrom",
                f"{dict(arg.get('valueFrom') or {})}: no counterpart; the argument is left "
                "unset, so the operator refuses the metric until it has a value",
            )
    count = 1
    for index, entry in enumerate(ref.get("templates") or []):
        template_name = str(entry.get("templateName"))
        metrics = templates.get(template_name)
        if metrics is None:
            out.todo(
                f"{path}.templates[{index}]",
                f"{template_name} was not among the documents converted; its metrics are left out",
            )
            continue
        for metric in metrics:
            if not metric.out.obj:
                out.todo(f"{path}.templates[{index}]", f"{metric.metric} left out (provider)")
                continue
            template_ref: Obj = {"name": metric.template}
            if metric.kind != api.MetricTemplateKind.NAMESPACED.value:
                template_ref["kind"] = metric.kind
            same = [m for m in into.metrics if m["name"] == metric.metric]
            if same and same[0]["templateRef"] == template_ref:
                continue  # the same template, used twice (a step and the background)
            metric_name = f"{metric.template}-{metric.metric}" if same else metric.metric
            declared = [a["name"] for a in metric.out.obj["spec"].get("args", [])]
            args = [
                {"name": _arg_name(k), "value": v}
                for k, v in given.items()
                if _arg_name(k) in declared
            ]
            converted: Obj = {"name": metric_name, "templateRef": template_ref}
            if args:
                converted["args"] = args
            into.metrics.append(converted)
            if metric.interval:
                into.intervals.add(_seconds(metric.interval))
                into.interval = into.interval or metric.interval
            if metric.failure_limit >= 0:
                into.failure_limits.add(metric.failure_limit)
            else:
                out.todo(f"{path}.templates[{index}]", f"{metric.metric}: failureLimit < 0")
            if metric.consecutive_error_limit is not None:
                into.error_limits.add(int(metric.consecutive_error_limit))
            count = max(count, metric.count or 1)
    _leftover(out, path, ref, ("templates", "args"))
    return count


def _argo_header_route(step: Mapping[str, Any], out: Output, path: str) -> Obj:
    matches = []
    for index, match in enumerate(step.get("match") or []):
        value = match.get("headerValue") or {}
        if "exact" in value:
            header = {"exact": str(value["exact"])}
        elif "regex" in value:
            header = {"regex": str(value["regex"])}
        elif "prefix" in value:
            header = {"regex": "^" + re.escape(str(value["prefix"]))}
        else:
            out.todo(f"{path}.match[{index}].headerValue", "only exact, regex and prefix")
            continue
        matches.append({"headerName": match.get("headerName"), "headerValue": header})
    return {"match": matches} if matches else {}


def argo_rollout(
    doc: Mapping[str, Any],
    templates: Mapping[str, list[ArgoMetric]],
    services: Mapping[str, Obj],
) -> list[Output]:
    spec = doc.get("spec") or {}
    name = _name(doc)
    out = Output({}, _describe(doc))
    outputs = [out]
    workload = spec.get("workloadRef") or {}
    if workload:
        if workload.get("kind") != "Deployment":
            raise ConvertError(f"{out.source}: workloadRef is a {workload.get('kind')}")
        target = str(workload.get("name"))
    else:
        target = name
        outputs.insert(0, _argo_deployment(doc))
    strategy_in = spec.get("strategy") or {}
    rollout: Obj = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target}}
    for key in ("progressDeadlineSeconds", "paused"):
        if key in spec:
            rollout[key] = spec[key]
    _leftover(
        out, "spec", spec,
        ("replicas", "selector", "template", "workloadRef", "strategy", "progressDeadlineSeconds",
         "paused", "minReadySeconds", "revisionHistoryLimit"),
    )  # fmt: skip
    analysis = _ArgoAnalysis(rollout=name)
    if "blueGreen" in strategy_in:
        service, strategy = _argo_blue_green(strategy_in["blueGreen"], out, templates, analysis)
        rollout["trafficRouting"] = {"service": {}}
        preview = strategy_in["blueGreen"].get("previewService")
        if preview:
            rollout["trafficRouting"]["service"]["previewService"] = preview
    elif "canary" in strategy_in:
        route, strategy = _argo_canary(strategy_in["canary"], out, templates, analysis)
        service = name
        rollout["trafficRouting"] = {"gatewayAPI": {"httpRoute": route or name}}
        canary = strategy_in["canary"]
        _warn_service_names(
            service,
            [
                (f"spec.strategy.canary.{key}", canary.get(key))
                for key in ("stableService", "canaryService")
            ],
            out,
        )
    else:
        raise ConvertError(f"{out.source}: no strategy.canary nor strategy.blueGreen")
    rollout["service"] = {"name": service, "port": _service_port(service, services, out)}
    rollout["strategy"] = strategy
    result: Obj = {}
    if analysis.interval:
        result["interval"] = analysis.interval
        if len(analysis.intervals) > 1:
            out.todo("analysis interval", "its templates' metrics have different intervals")
    if analysis.failure_limits:
        # Argo fails a metric when its failures exceed failureLimit; tidegate when they
        # reach it.
        result["failureLimit"] = max(analysis.failure_limits) + 1
        if len(analysis.failure_limits) > 1:
            out.todo("analysis failureLimit", "its templates' metrics have different ones")
    if analysis.error_limits:
        # The same for errors in a row (consecutiveErrorLimit) and inconclusiveLimit.
        result["inconclusiveLimit"] = max(analysis.error_limits) + 1
    if analysis.metrics:
        result["metrics"] = analysis.metrics
    rollout["analysis"] = result
    out.obj = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": _meta(doc),
        "spec": rollout,
    }
    return outputs


def _service_port(service: str, services: Mapping[str, Obj], out: Output) -> Any:
    ports = ((services.get(service) or {}).get("spec") or {}).get("ports") or []
    if ports and ports[0].get("port"):
        return ports[0]["port"]
    out.todo(
        "spec.service.port",
        f"Service {service} was not among the documents converted; 80 assumed",
    )
    return 80


def _argo_deployment(doc: Mapping[str, Any]) -> Output:
    spec = doc.get("spec") or {}
    out = Output({}, _describe(doc))
    deployment: Obj = {
        key: spec[key]
        for key in ("replicas", "selector", "template", "minReadySeconds", "revisionHistoryLimit")
        if key in spec
    }
    meta = _meta(doc)
    labels = (doc.get("metadata") or {}).get("labels")
    if labels:
        meta["labels"] = labels
    out.obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deployment}
    return out


def _warn_service_names(service: str, others: Iterable[tuple[str, Any]], out: Output) -> None:
    copies = {f"{service}-stable", f"{service}-canary"}
    for path, name in others:
        if name in copies:
            out.todo(
                path,
                f"Service {name} has the name of one of tidegate's own Services; tidegate "
                "will not take it over: delete it once the Rollout is gone "
                "(docs/migrating.md)",
            )


def _argo_canary(
    canary: Mapping[str, Any],
    out: Output,
    templates: Mapping[str, list[ArgoMetric]],
    analysis: _ArgoAnalysis,
) -> tuple[str | None, Obj]:
    """(the HTTPRoute, spec.strategy) of an Argo canary."""
    path = "spec.strategy.canary"
    route: str | None = None
    routing = canary.get("trafficRouting") or {}
    plugin = (routing.get("plugins") or {}).get(ARGO_GATEWAY_PLUGIN) or {}
    if plugin.get("httpRoute"):
        route = str(plugin["httpRoute"])
    elif plugin.get("httpRoutes"):
        route = str(plugin["httpRoutes"][0].get("name"))
        if len(plugin["httpRoutes"]) > 1:
            out.todo(f"{path}.trafficRouting.plugins", "more than one HTTPRoute; the first kept")
    elif routing:
        out.todo(f"{path}.trafficRouting", "not the Gateway API plugin; write an HTTPRoute")
    else:
        out.todo(
            f"{path}.trafficRouting",
            "not set (weights by pod count): tidegate needs an HTTPRoute whose rule 0 it owns",
        )
    if routing:
        _leftover(out, f"{path}.trafficRouting", routing, ("plugins", "managedRoutes"))
    stable, canary_service = canary.get("stableService"), canary.get("canaryService")
    if stable or canary_service:
        out.todo(
            f"{path}.stableService/canaryService",
            "tidegate makes its own Services, <service>-stable and <service>-canary, from "
            "spec.service; point spec.service at the Service in front of the app",
        )
    background = canary.get("analysis")
    if background:
        _argo_analysis(background, f"{path}.analysis", out, templates, analysis)
        if background.get("startingStep"):
            out.todo(f"{path}.analysis.startingStep", "tidegate analyses every weight step")
    interval = min(analysis.intervals) if analysis.intervals else None
    steps: list[Obj] = []
    for index, step in enumerate(canary.get("steps") or []):
        where = f"{path}.steps[{index}]"
        if "setWeight" in step:
            steps.append({"setWeight": step["setWeight"]})
        elif "pause" in step:
            duration = (step["pause"] or {}).get("duration")
            if duration is None:
                steps.append({"pause": {}})
            elif background and interval:
                # Under background analysis a timed pause is measured all along; in
                # tidegate a weight step waits for a passing measurement, and an analysis
                # step for more. So the pause becomes measurements at the weight.
                measurements = max(1, math.ceil(_seconds(duration) / interval))
                if steps and "setWeight" in steps[-1]:
                    measurements -= 1
                if measurements:
                    steps.append({"analysis": {"iterations": measurements}})
            else:
                steps.append({"pause": {"duration": _duration(duration)}})
        elif "analysis" in step:
            count = _argo_analysis(step["analysis"], f"{where}.analysis", out, templates, analysis)
            out.todo(
                f"{where}.analysis",
                "tidegate measures all of spec.analysis.metrics at every analysed step, not "
                "only this step's templates",
            )
            steps.append({"analysis": {"iterations": count}})
        elif "setHeaderRoute" in step:
            steps.append({"setHeaderRoute": _argo_header_route(step["setHeaderRoute"], out, where)})
        elif "setMirrorRoute" in step:
            mirror = step["setMirrorRoute"] or {}
            if mirror.get("match"):
                out.todo(f"{where}.setMirrorRoute.match", "tidegate mirrors the whole rule")
            steps.append({"setMirrorRoute": {"percentage": mirror.get("percentage", 0)}})
        else:
            out.todo(where, f"{', '.join(step)}: no counterpart; step left out")
    if not steps:
        out.todo(f"{path}.steps", "none converted; one pause: {} put in their place")
        steps = [{"pause": {}}]
    strategy: Obj = {"steps": steps}
    for key in ("scaleDownDelaySeconds", "abortScaleDownDelaySeconds"):
        if key in canary:
            strategy[key] = canary[key]
    _leftover(
        out, path, canary,
        ("steps", "analysis", "trafficRouting", "stableService", "canaryService",
         "scaleDownDelaySeconds", "abortScaleDownDelaySeconds"),
    )  # fmt: skip
    return route, {"canary": strategy}


def _argo_blue_green(
    blue_green: Mapping[str, Any],
    out: Output,
    templates: Mapping[str, list[ArgoMetric]],
    analysis: _ArgoAnalysis,
) -> tuple[str, Obj]:
    path = "spec.strategy.blueGreen"
    service = str(blue_green.get("activeService"))
    strategy: Obj = {}
    for key in (
        "autoPromotionEnabled",
        "autoPromotionSeconds",
        "previewReplicaCount",
        "scaleDownDelaySeconds",
        "abortScaleDownDelaySeconds",
    ):
        if key in blue_green:
            strategy[key] = blue_green[key]
    for key in ("prePromotionAnalysis", "postPromotionAnalysis"):
        if blue_green.get(key):
            count = _argo_analysis(blue_green[key], f"{path}.{key}", out, templates, analysis)
            strategy[key] = {"iterations": count}
    _warn_service_names(
        service, [(f"{path}.previewService", blue_green.get("previewService"))], out
    )
    _leftover(
        out, path, blue_green,
        ("activeService", "previewService", "autoPromotionEnabled", "autoPromotionSeconds",
         "previewReplicaCount", "scaleDownDelaySeconds", "abortScaleDownDelaySeconds",
         "prePromotionAnalysis", "postPromotionAnalysis"),
    )  # fmt: skip
    return service, {"blueGreen": strategy}


# --- all together ----------------------------------------------------------------------------


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
    services = {_name(d): d for d in docs if d.get("kind") == "Service"}
    outputs: list[Output] = []
    for doc in docs:
        if _kind(doc) == "flagger template":
            flagger_templates[_name(doc)] = flagger_template(doc)
            outputs.append(flagger_templates[_name(doc)])
        elif _kind(doc) == "argo template":
            argo[_name(doc)] = argo_templates(doc)
            outputs += [m.out for m in argo[_name(doc)]]
    skipped: list[str] = []
    for doc in docs:
        if _kind(doc) == "canary":
            outputs += flagger_canary(doc, flagger_templates)
        elif _kind(doc) == "rollout":
            outputs += argo_rollout(doc, argo, services)
        elif not _kind(doc):
            skipped.append(_describe(doc))
    return outputs, skipped


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # an object the input shares is written out each time


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(outputs: Iterable[Output], skipped: Iterable[str]) -> str:
    """The YAML stream: each object with its TODO comments above it; a document with no
    object (a template that could not be converted) keeps only its comments."""
    parts = []
    for out in outputs:
        lines = [f"# Converted from {out.source}"]
        lines += [f"# WARNING: {text}".replace("\n", " ") for text in out.warnings]
        lines += [f"# TODO: {todo}".replace("\n", " ") for todo in out.todos]
        body = yaml.dump(out.obj, Dumper=_Dumper, sort_keys=False, width=1 << 20) if out.obj else ""
        parts.append("\n".join(lines) + "\n" + body)
    left = list(skipped)
    if left:
        parts.append("\n".join(f"# Not converted, kept as it is: {d}" for d in left) + "\n")
    return "---\n".join(parts)


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
