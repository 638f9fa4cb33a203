"""Flagger's `Canary` and `MetricTemplate` as tidegate objects.

A `MetricTemplate` with a Prometheus query becomes a MetricTemplate whose query uses
tidegate's variables (`{{ target }}-canary` is `{{ canaryService }}`, a template variable
an argument). A `Canary` becomes a ProgressiveRollout: its analysis gives the strategy
(weights, A/B testing, mirroring or blue/green), its metrics and its webhooks; with the
Gateway API provider, the HTTPRoute Flagger made comes too. Kept apart from the Argo
converter: the two share only the helpers in `output`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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
)

FLAGGER_GROUP = "flagger.app/"
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"

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
            arg = arg_name_of(name.removeprefix("variables."))
        else:
            arg = arg_name_of(name)
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
    out = Output({}, describe(doc))
    provider = spec.get("provider") or {}
    kind = provider.get("type", "prometheus")
    if kind != "prometheus" or not spec.get("query"):
        out.todo("spec.provider.type", f"{kind}: only Prometheus queries have a counterpart")
        return out
    query, args = _flagger_query(str(spec["query"]), out)
    out.obj = {
        "apiVersion": api.API_VERSION,
        "kind": api.MetricTemplateKind.NAMESPACED.value,
        "metadata": metadata_of(doc),
        "spec": {"query": query, **({"args": [{"name": a} for a in args]} if args else {})},
    }
    if provider.get("address"):
        out.todo(
            "spec.provider.address",
            f"{provider['address']}: a template has no address; set spec.analysis.prometheus."
            "address on the rollouts that use it, unless the operator's --prometheus-url is it",
        )
    leftover(out, "spec.provider", provider, ("type", "address"))
    leftover(out, "spec", spec, ("provider", "query"))
    return out


def _flagger_match(entries: list[Any], out: Output, path: str) -> list[Obj] | None:
    """Flagger's `match` (any entry) as tidegate's header match (all entries must match):
    only one entry of headers converts."""
    if len(entries) != 1:
        out.todo(path, "more than one entry (any of them); tidegate matches one set of headers")
        return None
    entry = entries[0] or {}
    leftover(out, f"{path}[0]", entry, ("headers",))
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
    out = Output({}, describe(doc))
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
        leftover(out, "spec.autoscalerRef", autoscaler, ("apiVersion", "kind", "name"))
    elif autoscaler:
        out.todo("spec.autoscalerRef", f"a {autoscaler.get('kind')}; only an HPA converts")
    leftover(
        out, "spec.service", service_in,
        ("name", "port", "targetPort", "portName", "hosts", "gatewayRefs"),
    )  # fmt: skip
    leftover(
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
        "metadata": metadata_of(doc),
        "spec": rollout,
    }
    return outputs


def _flagger_route(doc: Mapping[str, Any], service: str, port: Any, svc: Obj) -> Output:
    """The HTTPRoute Flagger made for the Canary, pointed at the user's Service."""
    out = Output({}, describe(doc))
    route: Obj = {"rules": [{"backendRefs": [{"name": service, "port": port}]}]}
    if svc.get("gatewayRefs"):
        route["parentRefs"] = svc["gatewayRefs"]
    if svc.get("hosts"):
        route["hostnames"] = svc["hosts"]
    out.obj = {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": metadata_of(doc, service),
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
        result["interval"] = duration_text(analysis["interval"])
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
                and duration_seconds(metric["interval"]) != duration_seconds(result["interval"])
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
    leftover(
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
                {"name": arg_name_of(k), "value": str(v)} for k, v in variables.items()
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
    leftover(
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
            timeout = duration_text(hook["timeout"])
            if duration_seconds(timeout) > duration_seconds(api.WEBHOOK_TIMEOUT_MAX):
                out.todo(f"{path}.timeout", f"{timeout}: tidegate waits at most 5m")
                timeout = api.WEBHOOK_TIMEOUT_MAX
            entry["timeout"] = timeout
        if hook.get("metadata"):
            entry["metadata"] = {str(k): str(v) for k, v in hook["metadata"].items()}
        leftover(out, path, hook, ("name", "type", "url", "timeout", "metadata"))
        converted.append(entry)
    if converted:
        out.todo(
            "spec.analysis.webhooks",
            "tidegate's request body is its own (docs/api.md, Webhooks): check the endpoints",
        )
    return converted
