"""The side-by-side table from a run's results (bench/peers.py): tidegate beside each peer,
with the peer's figure as a multiple of tidegate's. A cell without a figure says why.

Pure, apart from `write_results`, which writes the JSON and Markdown files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scenario import ARGO, FLAGGER, TIDEGATE

MiB = 2**20
# Why a peer has no figure where tidegate has one, when the run itself cannot say.
NO_STEP_LATENCY = {
    FLAGGER: "not measurable: Flagger exports no per-step latency (see per-rollout time to done)",
    ARGO: "not measurable: Argo Rollouts exports no per-step latency (see per-rollout time to "
    "done)",
}

Cell = tuple[float | None, str]  # (number for ratios, text)


def _get(result: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)  # type: ignore[assignment]
    return result


def rank(values: list[float], q: float) -> float | None:
    """The nearest-rank `q` quantile of sorted `values`; None for none."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def one_line(text: str, limit: int = 120) -> str:
    """An error as a table cell: its first line, shortened, no column separators."""
    first = text.strip().splitlines()[0] if text.strip() else "?"
    first = first.replace("|", "/")
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _why(result: dict[str, Any], section: str, error_key: str = "error") -> str:
    error = _get(result, section, error_key) or _get(result, section, "error")
    if error:
        return f"failed: {one_line(str(error))}"
    if section not in result:
        return "not run"
    return "not seen in this run"


def number(
    section: str, key: str, text: Callable[[float], str], scale: float = 1.0
) -> Callable[[str, dict[str, Any]], Cell]:
    """A figure `result[section][key]` (divided by `scale`), written by `text`."""

    def cell(controller: str, result: dict[str, Any]) -> Cell:
        value = _get(result, section, key)
        if isinstance(value, int | float):
            return value / scale, text(value / scale)
        return None, _why(result, section)

    return cell


def seconds(section: str, key: str) -> Callable[[str, dict[str, Any]], Cell]:
    return number(section, key, lambda v: f"{v:.2f} s")


def per_min(section: str, key: str, unit: str = "/min") -> Callable[[str, dict[str, Any]], Cell]:
    return number(section, key, lambda v: f"{v:.1f}{unit}")


def mib(section: str, key: str) -> Callable[[str, dict[str, Any]], Cell]:
    return number(section, key, lambda v: f"{v:.0f} MiB", MiB)


def requests_cell(section: str) -> Callable[[str, dict[str, Any]], Cell]:
    def cell(controller: str, result: dict[str, Any]) -> Cell:
        value, text = per_min(section, "idle_requests_per_min")(controller, result)
        writes = _get(result, section, "idle_writes_per_min")
        return value, text if value is None else f"{text} ({writes:.1f} writes)"

    return cell


def step_p99(section: str) -> Callable[[str, dict[str, Any]], Cell]:
    def cell(controller: str, result: dict[str, Any]) -> Cell:
        if controller in NO_STEP_LATENCY:
            return None, NO_STEP_LATENCY[controller]
        return seconds(section, "step_p99_s")(controller, result)

    return cell


def done_cell(section: str) -> Callable[[str, dict[str, Any]], Cell]:
    def cell(controller: str, result: dict[str, Any]) -> Cell:
        value = _get(result, section, "change_to_all_done_s")
        failed = _get(result, section, "failed") or 0
        if isinstance(value, int | float):
            return float(value), f"{value:.0f} s" + (f" ({failed} failed)" if failed else "")
        if _get(result, section, "change_error"):
            return None, _why(result, section, "change_error")
        if _get(result, section, "idle_rss") is not None:
            done, n = _get(result, section, "done"), _get(result, section, "n")
            waited = _get(result, section, "waited_s")
            if isinstance(done, int) and isinstance(waited, int | float):
                return None, f"{done} of {n} done when the wait ended at {waited:.0f} s" + (
                    f" ({failed} failed)" if failed else ""
                )
            return None, f"not all done within the timeout ({failed} failed)"
        return None, _why(result, section)

    return cell


def each_done(section: str) -> Callable[[str, dict[str, Any]], Cell]:
    """p50 and p99 of each rollout's own time from the change to done; the ratio is of the
    p99s. Over those that were done, and says so when not all were."""

    def cell(controller: str, result: dict[str, Any]) -> Cell:
        p50, p99 = _get(result, section, "done_p50_s"), _get(result, section, "done_p99_s")
        if not isinstance(p99, int | float) or not isinstance(p50, int | float):
            return None, _why(result, section, "change_error")
        done, n = _get(result, section, "done"), _get(result, section, "n")
        of = "" if done == n else f" (of the {done} of {n} done)"
        return float(p99), f"p50 {p50:.0f} s, p99 {p99:.0f} s{of}"

    return cell


def outcome(section: str) -> Callable[[str, dict[str, Any]], Cell]:
    def cell(controller: str, result: dict[str, Any]) -> Cell:
        what = _get(result, section, "outcome")
        after = _get(result, section, "after")
        if what is None:
            return None, _why(result, section)
        return None, what + (f" after {after:.1f} s" if isinstance(after, int | float) else "")

    return cell


def rows(
    fleet_sizes: list[int], cases: bool = True
) -> list[tuple[str, Callable[[str, dict[str, Any]], Cell]]]:
    """The table's rows; without `cases` (a fleets-only run) the fleets' alone."""
    table: list[tuple[str, Callable[[str, dict[str, Any]], Cell]]] = [
        ("bad canary: first 5xx -> 99% on stable (b)", seconds("bad_canary", "errors_to_stable")),
        (
            "bad canary: first 5xx -> failing measurement",
            seconds("bad_canary", "errors_to_measurement"),
        ),
        (
            "bad canary: failing measurement -> traffic write (a)",
            seconds("bad_canary", "measurement_to_write"),
        ),
        (
            "bad canary: write -> applied at the gateway",
            seconds("bad_canary", "write_to_applied"),
        ),
        ("healthy canary: change -> promoted", seconds("healthy", "change_to_done")),
        (
            "healthy canary: change -> 100% new at the gateway",
            seconds("healthy", "change_to_all_new_at_gateway"),
        ),
        ("query returns no data", outcome("no_data")),
        ("Prometheus stopped", outcome("prometheus_stopped")),
    ]
    if not cases:
        table = []
    for n in fleet_sizes:
        f = f"fleet_{n}"
        table += [
            (f"N={n} idle: RSS", mib(f, "idle_rss")),
            (f"N={n} idle: CPU", per_min(f, "idle_cpu_s_per_min", " s/min")),
            (f"N={n} idle: API requests", requests_cell(f)),
            (f"N={n} all changed: until all done", done_cell(f)),
            (f"N={n} all changed: each rollout's change -> done", each_done(f)),
            (f"N={n} all changed: peak RSS", mib(f, "peak_rss")),
            (f"N={n} all changed: p99 step latency", step_p99(f)),
        ]
    return table


def ratio(peer: float | None, base: float | None) -> str:
    if peer is None or base is None:
        return "-"
    if base == 0:
        return "-" if peer == 0 else "(tidegate 0)"
    return f"{peer / base:.2f}x"


def render_markdown(run: dict[str, Any]) -> str:
    results: dict[str, Any] = run["controllers"]
    peers = [p for p in (FLAGGER, ARGO) if p in results]
    base = results.get(TIDEGATE, {})
    header = ["figure", "tidegate"]
    for peer in peers:
        header += [peer, f"{peer} / tidegate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, cell in rows(run.get("fleet_sizes", []), run.get("cases", True)):
        base_value, base_text = cell(TIDEGATE, base) if base else (None, "not run")
        line = [label, base_text]
        for peer in peers:
            value, text = cell(peer, results[peer])
            line += [text, ratio(value, base_value)]
        lines.append("| " + " | ".join(line) + " |")
    m = run.get("machine", {})
    notes = [
        "",
        f"Run {run.get('started', '?')} on {m.get('cpus', '?')} CPUs ({m.get('cpu', '?')}); "
        f"load before: `{m.get('load_before', '?')}`; after: `{m.get('load_after', '?')}`.",
        "",
        f"Gateway route delay: {run.get('route_delay_s', 0)} s (each change applied that "
        "long after it is written, for every controller).",
        "",
        "Settings and differences:",
    ]
    for name, result in results.items():
        notes.append(f"- **{name}**: {result.get('settings', '')}")
        notes += [f"  - {d}" for d in result.get("differences", [])]
    qps = run.get("client_qps")
    notes.append(
        "- client-side API request limit: tidegate's client has none; the peers' "
        + (
            "at their defaults (Flagger -kubeconfig-qps=100, Argo Rollouts --qps=40)"
            if qps is None
            else f"raised to {qps} requests/s, burst {2 * qps} (-kubeconfig-qps, --qps)"
        )
    )
    s = run.get("scenario", {})
    notes.append(
        f"- scenario (all): {s.get('replicas')} pods, steps {s.get('steps')}, analysis every "
        f"{s.get('interval_s')} s, fail at the first failing measurement, error rate <= "
        f"{s.get('max_error_rate')}, {s.get('rps')} requests/s; no-data and no-Prometheus "
        f"watched for {run.get('observe_s')} s; idle window {run.get('idle_window_s')} s"
    )
    return "\n".join(lines + notes) + "\n"


def write_results(run: dict[str, Any], directory: Path, stamp: str) -> tuple[Path, Path]:
    """bench/results/peers-<stamp>.json and .md; written again as each controller ends, so
    that an interrupted run keeps what it measured."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"peers-{stamp}.json"
    md_path = directory / f"peers-{stamp}.md"
    json_path.write_text(json.dumps(run, indent=1, default=str) + "\n")
    md_path.write_text(render_markdown(run))
    return json_path, md_path
