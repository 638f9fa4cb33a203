"""The pure parts of the demo and the benchmark: traffic windows, the view and the summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tidegate_devenv.demo import (
    Outcome,
    latest_event_text,
    metrics_text,
    render,
    render_line,
    routes_text,
    step_text,
    summary,
)
from tidegate_devenv.traffic import Sample, Split, first_error_at, settled_at, split


def steady(start: float, end: float, rps: int, version: str, code: int = 200) -> list[Sample]:
    count = round((end - start) * rps)
    return [(start + i / rps, version, code) for i in range(count)]


def test_split_counts_versions_and_errors_inside_the_window_only() -> None:
    samples: list[Sample] = [
        (0.5, "1.0.0", 200),
        (1.0, "1.0.0", 200),
        (1.5, "1.1.0", 503),
        (1.9, None, 0),
        (2.0, "1.1.0", 200),
    ]
    result = split(samples, 1.0, 2.0)
    assert result == Split(total=3, by_version={"1.0.0": 1, "1.1.0": 1, None: 1}, errors=2)
    assert result.share("1.0.0") == 1 / 3
    assert split(samples, 5, 6).share("1.0.0") == 0.0


def test_split_description_lists_shares_and_errors() -> None:
    assert Split().describe() == "no responses"
    text = Split(total=4, by_version={"1.1.0": 1, "1.0.0": 3}, errors=1).describe()
    assert text == "1.0.0 75% 1.1.0 25% | errors 1/4"


def test_first_error_is_the_first_5xx_after_the_start() -> None:
    samples: list[Sample] = [(1.0, "a", 500), (2.0, "a", 200), (3.0, None, 0), (4.0, "b", 502)]
    assert first_error_at(samples) == 1.0
    assert first_error_at(samples, after=1.5) == 4.0
    assert first_error_at(samples, after=4.5) is None


def test_settled_at_is_where_the_canary_share_stays_below_the_threshold() -> None:
    # Canary 10% until t=5, then stable only.
    samples = sorted(
        [s for s in steady(0, 5, 100, "stable") if round(s[0] * 100) % 10]
        + [s for s in steady(0, 5, 100, "canary") if round(s[0] * 100) % 10 == 0]
        + steady(5, 9, 100, "stable")
    )
    last_canary = max(at for at, v, _ in samples if v == "canary")
    settled = settled_at(samples, "canary", after=0.0)
    assert settled is not None
    assert last_canary < settled <= last_canary + 0.011


def test_settled_at_tolerates_a_share_under_the_threshold() -> None:
    samples = sorted([*steady(0, 4, 50, "stable"), (2.005, "canary", 200)])
    # One canary response among 51 in every window holding it: about 2%.
    assert settled_at(samples, "canary", after=0.0, threshold=0.01) == 2.02
    assert settled_at(samples, "canary", after=0.0, threshold=0.03) == 0.0


def test_settled_at_is_none_while_the_canary_still_serves() -> None:
    samples = steady(0, 2, 10, "canary")
    assert settled_at(samples, "canary", after=0.0) is None
    assert settled_at([], "canary", after=0.0) is None


STATUS = {
    "phase": "Progressing",
    "currentStepIndex": 1,
    "canaryWeight": 30,
    "stableRevision": "aaaaaaaaaa",
    "canaryRevision": "bbbbbbbbbb",
    "metrics": [
        {"name": "error-rate", "phase": "Passed", "value": 0.0, "measuredAt": "x"},
        {"name": "latency-p99", "phase": "Failed", "value": 0.61234, "measuredAt": "x"},
        {"name": "other", "phase": "NoData", "measuredAt": "x"},
    ],
}


def test_step_text_is_one_based_and_capped() -> None:
    assert step_text(STATUS, 3) == "2/3"
    assert step_text({"currentStepIndex": 3}, 3) == "3/3"
    assert step_text({}, 3) == "-"


def test_metrics_text_shows_values_and_verdicts() -> None:
    assert metrics_text(STATUS) == "error-rate=0 pass, latency-p99=0.612 FAIL, other=- no data"
    assert metrics_text({}) == "-"


def test_render_shows_everything_the_view_promises() -> None:
    traffic = Split(total=10, by_version={"1.0.0": 7, "1.1.0": 3}, errors=0)
    lines = render(
        "rollout of 1.1.0",
        12.4,
        STATUS,
        3,
        {"aaaaaaaaaa": "1.0.0", "bbbbbbbbbb": "1.1.0"},
        traffic,
        "RolloutStarted: Rolling out revision bbbbbbbbbb",
    )
    text = "\n".join(lines)
    for expected in (
        "(12s)",
        "Progressing",
        "step 2/3",
        "canary weight 30%",
        "stable  1.0.0 (aaaaaaaaaa)",
        "canary 1.1.0 (bbbbbbbbbb)",
        "latency-p99=0.612 FAIL",
        "1.0.0 70% 1.1.0 30% | errors 0/10",
        "RolloutStarted: Rolling out",
    ):
        assert expected in text
    line = render_line(12.4, STATUS, 3, traffic, "")
    assert line.startswith(" 12.4s Progressing step 2/3 weight 30% |")
    assert "\n" not in line


def test_summary_names_both_outcomes() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    good = Outcome("1.1.0", "Succeeded", 19.2)
    bad = Outcome("1.2.0", "Failed", 11.0, first_failure=t0, ended_at=t0 + timedelta(seconds=6))
    assert summary(good, bad, 0.9987) == (
        "1.1.0 promoted in 19 s; 1.2.0 rolled back 6 s after its first failing check; "
        "99.9% of requests on stable afterwards"
    )


def test_summary_says_when_an_outcome_did_not_happen() -> None:
    text = summary(Outcome("1.1.0", "Failed", 9.0), Outcome("1.2.0", "", 180.0), None)
    assert text == "1.1.0 was not promoted (Failed); 1.2.0 was not rolled back (no outcome)"


def test_step_text_names_the_step_and_needs_no_step_count() -> None:
    status = {"currentStepIndex": 2, "currentStepName": "Switched"}
    assert step_text(status, 0) == "3 (Switched)"
    assert step_text({"currentStepIndex": 0, "currentStepName": "setWeight 10"}, 3) == (
        "1/3 (setWeight 10)"
    )


def test_routes_text_shows_header_mirror_and_preview_only_when_set() -> None:
    assert routes_text({"canaryWeight": 0, "mirrorPercent": 0, "previewActive": False}) == ""
    status = {"headerRoute": [{"headerName": "X"}], "mirrorPercent": 50, "previewActive": True}
    assert routes_text(status) == ", header route, mirror 50%, preview on new version"


def test_summary_tells_the_blue_green_switch() -> None:
    good, bad = Outcome("1.1.0", "Succeeded", 13.0), Outcome("1.2.0", "Failed", 9.0)
    text = summary(good, bad, None, Outcome("2.0.0", "Succeeded", 35.2), 0)
    assert text.endswith("blue/green 2.0.0 switched and promoted in 35 s with 0 failed requests")
    failed = summary(good, bad, None, Outcome("2.0.0", "", 0.0))
    assert failed.endswith("blue/green 2.0.0: no outcome")


def test_latest_event_is_the_newest_of_core_and_events_k8s_io_ones() -> None:
    core = [
        {"metadata": {"resourceVersion": "12"}, "reason": "StepStarted", "message": "step 1"},
        {"metadata": {"resourceVersion": "30"}, "reason": "Promoted", "message": "all live"},
    ]
    # events.k8s.io/v1 says `note` where core/v1 says `message`.
    new = [{"metadata": {"resourceVersion": "41"}, "reason": "RolledBack", "note": "errors"}]
    assert latest_event_text(core, new) == "RolledBack: errors"
    assert latest_event_text(core, []) == "Promoted: all live"
    # Versions compare as numbers, not as text.
    older = {"metadata": {"resourceVersion": "9"}, "reason": "Paused", "note": "by hand"}
    newer = {"metadata": {"resourceVersion": "100"}, "reason": "Resumed", "note": "by hand"}
    assert latest_event_text([older], [newer]) == "Resumed: by hand"
    assert latest_event_text([], []) == ""
