"""Argo Rollouts' `Rollout`, `AnalysisTemplate` and `ClusterAnalysisTemplate` as
tidegate objects.

Each metric of an analysis template becomes its own MetricTemplate (or
ClusterMetricTemplate), with Argo's `{{ args.x }}` kept as arguments and simple success and
failure conditions as a thresholdRange. A `Rollout` becomes a Deployment (unless it already
points at one with workloadRef) and a ProgressiveRollout: the canary or blue/green strategy
maps step by step, and the analyses it uses add up to one spec.analysis. Kept apart from the
Flagger converter: the two share only the helpers in `output`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidegate import api
from tidegate.plugin.convert.output import (
    ConvertError,
    Obj,
    Output,
    arg_name_of,
    describe,
    duration_seconds,
    duration_text,
    leftover,
    metadata_of,
    name_of,
)

ARGO_GROUP = "argoproj.io/"
ARGO_GATEWAY_PLUGIN = "argoproj-labs/gatewayAPI"

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
        out = Output({}, f"{describe(doc)} metric {metric.get('name')}")
        path = f"spec.metrics[{index}]"
        name = name_of(doc) if len(metrics) == 1 else f"{name_of(doc)}-{metric.get('name')}"
        prometheus = (metric.get("provider") or {}).get("prometheus")
        entry = ArgoMetric(
            name, str(metric.get("name")), kind, out,
            duration_text(metric["interval"]) if metric.get("interval") else None,
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
            return f"{{{{ args.{arg_name_of(arg)} }}}}"

        query = _ARGO_ARG.sub(rename, str(prometheus["query"]))
        args = []
        for arg in used:
            entry_arg: Obj = {"name": arg_name_of(arg)}
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
            "metadata": metadata_of(doc, name),
            "spec": template,
        }
        if prometheus.get("address"):
            out.todo(
                f"{path}.provider.prometheus.address",
                f"{prometheus['address']}: set spec.analysis.prometheus.address on the "
                "rollouts that use it, unless the operator's --prometheus-url is it",
            )
        leftover(out, f"{path}.provider.prometheus", prometheus, ("address", "query"))
        leftover(
            out, path, metric,
            ("name", "provider", "interval", "successCondition", "failureCondition",
             "failureLimit", "consecutiveErrorLimit", "count"),
        )  # fmt: skip
    leftover(found[0].out if found else Output({}, ""), "spec", spec, ("args", "metrics"))
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
                {"name": arg_name_of(k), "value": v}
                for k, v in given.items()
                if arg_name_of(k) in declared
            ]
            converted: Obj = {"name": metric_name, "templateRef": template_ref}
            if args:
                converted["args"] = args
            into.metrics.append(converted)
            if metric.interval:
                into.intervals.add(duration_seconds(metric.interval))
                into.interval = into.interval or metric.interval
            if metric.failure_limit >= 0:
                into.failure_limits.add(metric.failure_limit)
            else:
                out.todo(f"{path}.templates[{index}]", f"{metric.metric}: failureLimit < 0")
            if metric.consecutive_error_limit is not None:
                into.error_limits.add(int(metric.consecutive_error_limit))
            count = max(count, metric.count or 1)
    leftover(out, path, ref, ("templates", "args"))
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
    name = name_of(doc)
    out = Output({}, describe(doc))
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
    leftover(
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
        if strategy_in["canary"].get("trafficRouting"):
            rollout["trafficRouting"] = {"gatewayAPI": {"httpRoute": route or name}}
        else:
            # Argo's basic canary: weights by pod count, as podRatio carries them.
            rollout["trafficRouting"] = {"podRatio": {}}
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
        "metadata": metadata_of(doc),
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
    out = Output({}, describe(doc))
    deployment: Obj = {
        key: spec[key]
        for key in ("replicas", "selector", "template", "minReadySeconds", "revisionHistoryLimit")
        if key in spec
    }
    meta = metadata_of(doc)
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
    if routing:
        leftover(out, f"{path}.trafficRouting", routing, ("plugins", "managedRoutes"))
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
                measurements = max(1, math.ceil(duration_seconds(duration) / interval))
                if steps and "setWeight" in steps[-1]:
                    measurements -= 1
                if measurements:
                    steps.append({"analysis": {"iterations": measurements}})
            else:
                steps.append({"pause": {"duration": duration_text(duration)}})
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
    leftover(
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
    leftover(
        out, path, blue_green,
        ("activeService", "previewService", "autoPromotionEnabled", "autoPromotionSeconds",
         "previewReplicaCount", "scaleDownDelaySeconds", "abortScaleDownDelaySeconds",
         "prePromotionAnalysis", "postPromotionAnalysis"),
    )  # fmt: skip
    return service, {"blueGreen": strategy}
