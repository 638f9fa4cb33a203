"""What `kubectl tidegate get` prints: pure functions from objects to text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from tidegate import api
from tidegate.slo import checked_metrics
from tidegate.strategies import plan_for

Obj = dict[str, Any]

# How many of the rollout's Events the one-rollout screen shows, newest last.
EVENTS_SHOWN = 8


def _age(then: str | None, now: datetime) -> str:
    if not then:
        return "-"
    seconds = int((now - datetime.fromisoformat(then.replace("Z", "+00:00"))).total_seconds())
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _spec(rollout: Obj) -> api.RolloutSpec | None:
    try:
        return api.RolloutSpec.model_validate(rollout.get("spec") or {})
    except ValidationError:
        return None


def strategy_name(rollout: Obj) -> str:
    strategy = (rollout.get("spec") or {}).get("strategy") or {}
    return "BlueGreen" if "blueGreen" in strategy else "Canary" if "canary" in strategy else "?"


def step_names(rollout: Obj) -> list[str]:
    spec = _spec(rollout)
    return [] if spec is None else [step.name for step in plan_for(spec).steps]


def step_text(rollout: Obj) -> str:
    status = rollout.get("status") or {}
    steps = step_names(rollout)
    index = status.get("currentStepIndex")
    if index is None or not steps:
        return "-"
    return f"{min(index + 1, len(steps))}/{len(steps)}"


def traffic_text(status: Mapping[str, Any], strategy: str) -> str:
    weight = int(status.get("canaryWeight") or 0)
    new = "green" if strategy == "BlueGreen" else "canary"
    old = "blue" if strategy == "BlueGreen" else "stable"
    parts = [f"{old} {100 - weight}% / {new} {weight}%"]
    for match in status.get("headerRoute") or []:
        value = match.get("headerValue") or {}
        shown = value.get("exact", "") if "exact" in value else f"~{value.get('regex', '')}"
        parts.append(f"header route {match.get('headerName')}={shown} -> {new}")
    if status.get("mirrorPercent"):
        parts.append(f"mirror {status['mirrorPercent']}% -> {new}")
    if status.get("previewActive"):
        parts.append(f"preview -> {new}")
    return "; ".join(parts)


def table(rollouts: Sequence[Obj], now: datetime, *, all_namespaces: bool) -> str:
    """One line per rollout, as `kubectl get` prints, with the step and the last decision."""
    header = ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "LAST DECISION", "AGE"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for rollout in rollouts:
        meta, status = rollout["metadata"], rollout.get("status") or {}
        message = str(status.get("message") or "-")
        row = [
            meta["name"],
            strategy_name(rollout),
            str(status.get("phase") or "-"),
            step_text(rollout),
            f"{status.get('canaryWeight') or 0}%",
            message if len(message) <= 70 else message[:69] + "…",
            _age(meta.get("creationTimestamp"), now),
        ]
        if all_namespaces:
            row.insert(0, meta["namespace"])
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )


def _range_text(metric: api.Metric) -> str:
    """The metric's bounds, or where they come from when its template sets them."""
    if metric.threshold_range is not None:
        return metric.threshold_range.describe()
    ref = metric.template_ref
    return f"({ref.kind.value} {ref.name})" if ref is not None else ""


def _metric_line(metric: Mapping[str, Any], ranges: Mapping[str, str], now: datetime) -> str:
    value = metric.get("value")
    shown = "no data" if value is None else f"{value:g}"
    return (
        f"  {metric.get('name', '?'):<16} {shown:>10}  {ranges.get(metric.get('name', ''), '')}"
        f"  {metric.get('phase', '?')} ({_age(metric.get('measuredAt'), now)} ago)"
        + ("  dry run" if metric.get("dryRun") else "")
    )


def _webhook_line(webhook: Mapping[str, Any], now: datetime) -> str:
    code = webhook.get("code")
    answer = "no answer" if code is None else str(code)
    return (
        f"  {webhook.get('name', '?'):<16} {webhook.get('type', '?'):<22} {answer:>9}  "
        f"{webhook.get('phase', '?')} ({_age(webhook.get('calledAt'), now)} ago)"
    )


def detail(
    rollout: Obj,
    images: Mapping[str, Sequence[str]],
    events: Sequence[Obj],
    now: datetime,
) -> str:
    """The one-rollout screen. `images`: role ("stable", "canary") -> the copy's images."""
    meta, status = rollout["metadata"], rollout.get("status") or {}
    spec = _spec(rollout)
    strategy = strategy_name(rollout)
    phase = status.get("phase") or "-"
    paused = " (spec.paused)" if (rollout.get("spec") or {}).get("paused") else ""
    lines = [
        f"Name:        {meta['name']}",
        f"Namespace:   {meta['namespace']}",
        f"Strategy:    {strategy}",
        f"Phase:       {phase}{paused}",
        f"Message:     {status.get('message') or '-'}",
        f"Step:        {step_text(rollout)}",
    ]
    index = status.get("currentStepIndex")
    running = phase in ("Progressing", "Paused")
    for i, name in enumerate(step_names(rollout)):
        if index is None or not running:
            mark = " "
        else:
            mark = "✔" if i < index else "▶" if i == index else " "
        lines.append(f"  {mark} {i + 1}. {name}")
    lines.append("Revisions:")
    for role, key in (("stable", "stableRevision"), ("canary", "canaryRevision")):
        shown = ", ".join(images.get(role, ())) or "-"
        lines.append(f"  {role:<7} {status.get(key) or '-':<12} images: {shown}")
    lines.append(f"Traffic:     {traffic_text(status, strategy)}")
    ranges = {}
    if spec is not None:
        ranges = {m.name: _range_text(m) for m in checked_metrics(spec.analysis)}
    lines.append("Metrics:" + ("" if status.get("metrics") else "     -"))
    lines += [_metric_line(m, ranges, now) for m in status.get("metrics") or []]
    if status.get("webhooks") or (spec is not None and spec.webhooks):
        lines.append("Webhooks:" + ("" if status.get("webhooks") else "    -"))
        lines += [_webhook_line(w, now) for w in status.get("webhooks") or []]
    lines.append("Conditions:")
    for c in status.get("conditions") or []:
        lines.append(f"  {c.get('type', '?'):<12} {c.get('status', '?'):<6} {c.get('reason', '')}")
    lines.append("Events:" + ("" if events else "      -"))
    for event in list(events)[-EVENTS_SHOWN:]:
        when = event.get("eventTime") or event.get("lastTimestamp") or event.get("firstTimestamp")
        note = event.get("note") or event.get("message") or ""
        kind, reason = event.get("type", ""), event.get("reason", "")
        lines.append(f"  {_age(when, now):>4}  {kind:<7} {reason:<18} {note}")
    return "\n".join(lines)
