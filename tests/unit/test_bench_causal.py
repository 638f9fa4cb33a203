"""(b) from causally ordered events, and the side-by-side table: pure."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))

from causal import applied_at, first_write, rollback
from peers_report import rank, render_markdown

from tidegate_devenv.audit import ApiCall, AuditedRequest


def write(resource: str, namespace: str, at: float, verb: str = "update") -> AuditedRequest:
    return AuditedRequest(
        call=ApiCall("g", resource, "", verb, True),
        namespace=namespace,
        uri="/",
        code=200,
        annotations={},
        verb=verb,
        received=datetime.fromtimestamp(at, UTC),
        completed=datetime.fromtimestamp(at + 0.01, UTC),
    )


PLANS = [
    {"at": 100.0, "route": "shop", "shares": {"1": 1.0}},
    {"at": 110.0, "route": "shop", "shares": {"1": 0.8, "2": 0.2}},
    {"at": 121.0, "route": "other", "shares": {"1": 1.0}},
    {"at": 121.5, "route": "shop", "shares": {"1": 1.0}},
]


def test_applied_is_the_first_plan_without_the_version_after_the_decision() -> None:
    assert applied_at(PLANS, "shop", "2", after=111.0) == 121.5
    assert applied_at(PLANS, "shop", "2", after=122.0) is None


def test_first_write_of_the_wanted_resource_in_the_namespace() -> None:
    requests = [
        write("httproutes", "bad", 110.0),
        write("httproutes", "other", 121.1),
        write("deployments", "bad", 121.2),
        write("httproutes", "bad", 121.3, verb="get"),
        write("httproutes", "bad", 121.4, verb="patch"),
    ]
    assert first_write(requests, "bad", ["httproutes"], after=121.0) == 121.4


def test_b_is_never_shorter_than_the_decision_it_depends_on() -> None:
    # Monotonic samples, offset 1000 to the wall clock: first 5xx at 110.5 (wall 1110.5);
    # the last canary response (111.9) comes before the route write (1121.0 wall), which
    # the old definition would have credited as "settled" 10 s early.
    samples = [(110.0 + i * 0.1, "1", 200) for i in range(5)]
    samples += [(110.5, "2", 500), (111.9, "2", 200)]
    samples += [(112.0 + i * 0.1, "1", 200) for i in range(150)]
    samples.sort()
    result = rollback(samples, 1000.0, 109.0, "2", 1120.0, 1121.0, 1121.2)
    assert result is not None
    figures = result.figures()
    assert figures["errors_to_measurement"] == 1120.0 - 1110.5
    assert figures["measurement_to_write"] == 1.0
    assert abs(figures["write_to_applied"] - 0.2) < 1e-9  # type: ignore[operator]
    assert result.settled is not None and result.settled >= 1121.2
    assert figures["errors_to_stable"] >= figures["errors_to_measurement"]  # type: ignore[operator]


def test_no_5xx_no_figures() -> None:
    assert rollback([(1.0, "1", 200)], 0.0, 0.0, "2", None, None, None) is None


def test_table_has_a_reason_in_every_cell_a_peer_cannot_fill() -> None:
    run = {
        "fleet_sizes": [10],
        "controllers": {
            "tidegate": {
                "bad_canary": {"errors_to_stable": 10.0, "measurement_to_write": 0.02},
                "fleet_10": {"idle_rss": 100 * 2**20, "step_p99_s": 0.5},
            },
            "flagger": {
                "bad_canary": {"errors_to_stable": 20.0, "measurement_to_write": 10.0},
                "fleet_10": {"idle_rss": 2**20, "change_error": "ApiException: (400)\nbody | x"},
            },
            "argo-rollouts": {"bad_canary": {"error": "not rolled back"}},
        },
    }
    text = render_markdown(run)
    assert "| bad canary: first 5xx -> 99% on stable (b) | 10.00 s | 20.00 s | 2.00x |" in text
    assert "failed: not rolled back" in text
    assert "Flagger exports no per-step latency" in text
    assert "| 1 MiB |" in text
    assert "failed: ApiException: (400) |" in text  # its first line only
    assert "body" not in text
    for line in text.splitlines():
        if line.startswith("| ") and "---" not in line:
            assert "|  |" not in line, line  # never a blank cell


def test_a_wait_that_ended_says_how_many_were_done_and_their_times() -> None:
    fleet = {"n": 1000, "idle_rss": 2**20, "peak_rss": 2**20, "failed": 0}
    run = {
        "fleet_sizes": [1000],
        "cases": False,
        "client_qps": 1000,
        "controllers": {
            "tidegate": {
                "fleet_1000": {
                    **fleet,
                    "change_to_all_done_s": 300.0,
                    "done": 1000,
                    "done_p50_s": 100.0,
                    "done_p99_s": 290.0,
                }
            },
            "flagger": {
                "fleet_1000": {
                    **fleet,
                    "change_to_all_done_s": None,
                    "done": 22,
                    "done_p50_s": 500.0,
                    "done_p99_s": 580.0,
                    "waited_s": 600.0,
                }
            },
        },
    }
    text = render_markdown(run)
    assert "| 300 s | 22 of 1000 done when the wait ended at 600 s |" in text
    assert (
        "| p50 100 s, p99 290 s | p50 500 s, p99 580 s (of the 22 of 1000 done) | 2.00x |" in text
    )
    assert "raised to 1000 requests/s, burst 2000" in text


def test_rank_is_the_nearest_rank_quantile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert rank(values, 0.99) == 99.0
    assert rank(values, 0.5) == 50.0
    assert rank([7.0], 0.99) == 7.0
    assert rank([], 0.5) is None
