"""kubectl tidegate's pure parts: the screens, the status verdict, lint."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tidegate.plugin import cli, lint, render

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "shop",
            "namespace": "ns",
            "generation": 3,
            "creationTimestamp": "2026-01-01T11:58:00Z",
        },
        "spec": {
            "targetRef": {"name": "shop"},
            "service": {"name": "shop", "port": 80},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}},
            "strategy": {
                "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}]}
            },
            "analysis": {
                "metrics": [{"name": "error-rate", "query": "q", "thresholdRange": {"max": 0.05}}]
            },
        },
        "status": {"observedGeneration": 3, **status},
    }


def test_the_screen_marks_the_current_step_and_shows_weights_metrics_and_events() -> None:
    shown = render.detail(
        rollout(
            phase="Paused",
            currentStepIndex=1,
            canaryWeight=10,
            stableRevision="aaa",
            canaryRevision="bbb",
            mirrorPercent=5,
            metrics=[
                {
                    "name": "error-rate",
                    "phase": "Passed",
                    "value": 0.01,
                    "measuredAt": "2026-01-01T11:59:50Z",
                }
            ],
            conditions=[{"type": "Ready", "status": "False", "reason": "AwaitingPromotion"}],
        ),
        {"stable": ["demo:1.0.0"], "canary": ["demo:1.1.0"]},
        [
            {
                "type": "Normal",
                "reason": "AwaitingPromotion",
                "note": "Step 2/3",
                "eventTime": "2026-01-01T11:59:00Z",
            }
        ],
        NOW,
    )
    assert "Step:        2/3" in shown
    assert "  ✔ 1. setWeight 10" in shown and "  ▶ 2. pause" in shown
    assert "    3. setWeight 60" in shown
    assert "stable 90% / canary 10%; mirror 5% -> canary" in shown
    assert "demo:1.1.0" in shown and "bbb" in shown
    assert "error-rate" in shown and "[-inf, 0.05]" in shown and "Passed (10s ago)" in shown
    assert "1m  Normal  AwaitingPromotion" in shown


def test_the_table_has_the_step_and_the_last_decision() -> None:
    text = render.table(
        [rollout(phase="Progressing", currentStepIndex=0, canaryWeight=10, message="analysing")],
        NOW,
        all_namespaces=True,
    )
    header, row = text.splitlines()
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "STRATEGY",
        "PHASE",
        "STEP",
        "WEIGHT",
        "LAST",
        "DECISION",
        "AGE",
    ]
    assert row.split() == ["ns", "shop", "Canary", "Progressing", "1/3", "10%", "analysing", "2m"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Succeeded", "stableRevision": "new"}, cli.EXIT_DONE),
        ({"phase": "Initialized", "stableRevision": "new"}, cli.EXIT_DONE),
        ({"phase": "Succeeded", "stableRevision": "old"}, None),  # not seen the change yet
        ({"phase": "Progressing", "canaryRevision": "new"}, None),
        ({"phase": "Failed", "canaryRevision": "new"}, cli.EXIT_FAILED),
        ({"phase": "Aborted", "canaryRevision": "new"}, cli.EXIT_FAILED),
        ({"phase": "Failed", "canaryRevision": "older"}, None),
        ({"phase": "Succeeded", "stableRevision": "new", "observedGeneration": 2}, None),
    ],
)
def test_status_waits_for_the_targets_revision(
    status: dict[str, Any], expected: int | None
) -> None:
    assert cli.outcome(rollout(**status), "new") == expected


def test_lint_accepts_every_example() -> None:
    files = sorted((REPO / "examples").rglob("*.yaml"))
    problems, summary = lint.lint(files)
    assert problems == []
    assert sum(int(line.split(": ")[1].split()[0]) for line in summary) >= 3


def test_lint_names_each_bad_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        "apiVersion: tidegate.io/v1alpha1\nkind: ProgressiveRollout\nmetadata: {name: x}\n"
        "spec:\n  targetRef: {name: a}\n  service: {name: a, port: 80}\n"
        "  trafficRouting: {service: {}}\n"
        "  strategy: {canary: {steps: [{setWeight: 120}, {setMirrorRoute: {percentage: 5}}]}}\n"
        "  analysis: {interval: soon}\n"
    )
    problems, _ = lint.lint([bad])
    assert len(problems) == 2, problems
    assert all(p.startswith(f"{bad}: document 2 (ProgressiveRollout x): ") for p in problems)
    assert any("spec.strategy.canary.steps[0].setWeight:" in p for p in problems)
    assert any("spec.analysis.interval:" in p for p in problems)


def test_lint_checks_pod_ratio_against_what_it_can_carry(tmp_path: Path) -> None:
    header = "{setHeaderRoute: {match: [{headerName: X, headerValue: {exact: '1'}}]}}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: tidegate.io/v1alpha1\nkind: ProgressiveRollout\nmetadata: {name: x}\n"
        "spec:\n  targetRef: {name: a}\n  service: {name: a, port: 80}\n"
        "  trafficRouting: {podRatio: {}}\n  autoscalerRef: {name: a}\n"
        f"  strategy: {{canary: {{steps: [{{setWeight: 20}}, {header}]}}}}\n"
    )
    problems, _ = lint.lint([bad])
    assert [p.split(": ", 2)[2].split(":")[0] for p in problems] == [
        "spec.strategy.canary.steps[1].setHeaderRoute",
        "spec.autoscalerRef",
    ], problems
    bad.write_text(bad.read_text().replace("podRatio: {}", "podRatio: {replicas: 3}"))
    problems, _ = lint.lint([bad])
    assert len(problems) == 1 and "spec.trafficRouting.podRatio.replicas:" in problems[0]


def test_lint_checks_metric_templates_and_a_templateref_by_its_shape(tmp_path: Path) -> None:
    examples = sorted((REPO / "examples" / "metric-templates").glob("*.yaml"))
    problems, summary = lint.lint(examples)
    assert problems == []
    assert summary == [
        f"{REPO}/examples/metric-templates/rollout.yaml: 1 ProgressiveRollout(s), ok",
        f"{REPO}/examples/metric-templates/templates.yaml: 0 ProgressiveRollout(s), "
        "2 metric template(s), ok",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: tidegate.io/v1alpha1\nkind: ClusterMetricTemplate\nmetadata: {name: t}\n"
        "spec: {query: '{{ args.x }}', thresholdRange: {min: 2, max: 1}}\n---\n"
        "apiVersion: tidegate.io/v1alpha1\nkind: MetricTemplate\nmetadata: {name: u}\n"
        "spec: {query: '{{ args.x }}'}\n---\n"
        "apiVersion: tidegate.io/v1\nkind: MetricTemplate\nmetadata: {name: v}\n"
        "spec: {query: up}\n"
    )
    problems, summary = lint.lint([bad])
    assert problems == [
        f"{bad}: document 1 (ClusterMetricTemplate t): spec.thresholdRange: Value error, "
        "thresholdRange.min (2) must not be greater than thresholdRange.max (1)",
        f"{bad}: document 2 (MetricTemplate u): spec.query: unknown variable {{{{ args.x }}}}: "
        "not a rollout variable nor in args",
        f"{bad}: document 3 (MetricTemplate v): apiVersion: 'tidegate.io/v1' is not "
        "'tidegate.io/v1alpha1'",
    ]
    assert summary == [f"{bad}: 0 ProgressiveRollout(s), 3 metric template(s), 3 problem(s)"]


def test_lint_reports_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("a: [1,\n")
    problems, _ = lint.lint([tmp_path / "broken.yaml", tmp_path / "missing.yaml"])
    assert [p.split(": ")[1] for p in problems] == ["not YAML", "cannot read"]


def test_lint_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = REPO / "examples" / "canary" / "rollout.yaml"
    assert cli.main(["lint", str(good)]) == 0
    (tmp_path / "bad.yaml").write_text(
        "kind: ProgressiveRollout\napiVersion: tidegate.io/v1alpha1\n"
    )
    assert cli.main(["lint", str(tmp_path / "bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert "metadata.name: a name is required" in err and "spec: a spec is required" in err


def test_the_screen_shows_each_webhooks_last_outcome() -> None:
    with_hooks = rollout(
        phase="Progressing",
        webhooks=[
            {
                "name": "change-window",
                "type": "confirmPromotion",
                "phase": "Failed",
                "code": 403,
                "calledAt": "2026-01-01T11:59:56Z",
            },
            {"name": "kill-switch", "type": "rollback", "phase": "Error", "calledAt": None},
        ],
    )
    shown = render.detail(with_hooks, {}, [], NOW)
    lines = shown.splitlines()
    at = lines.index("Webhooks:")
    assert lines[at + 1].split() == [
        "change-window",
        "confirmPromotion",
        "403",
        "Failed",
        "(4s",
        "ago)",
    ]
    assert "kill-switch" in lines[at + 2] and "no answer" in lines[at + 2]
    assert "Webhooks:" not in render.detail(rollout(phase="Progressing"), {}, [], NOW)


def test_the_screen_marks_a_dry_run_metric_and_lint_takes_the_field(tmp_path: Path) -> None:
    measured = {"phase": "Failed", "value": 1.0, "measuredAt": "2026-01-01T11:59:50Z"}
    shown = render.detail(
        rollout(
            phase="Progressing",
            metrics=[
                {"name": "error-rate", **measured, "phase": "Passed", "value": 0.01},
                {"name": "shadow", **measured, "dryRun": True},
            ],
        ),
        {},
        [],
        NOW,
    )
    lines = {line.split()[0]: line for line in shown.splitlines() if "ago)" in line}
    assert lines["shadow"].endswith("dry run") and "Failed" in lines["shadow"]
    assert not lines["error-rate"].endswith("dry run")
    spec = rollout()["spec"]
    spec["analysis"]["metrics"][0]["dryRun"] = "sometimes"
    file = tmp_path / "rollout.yaml"
    file.write_text(
        f"apiVersion: tidegate.io/v1alpha1\nkind: ProgressiveRollout\nmetadata: {{name: x}}\n"
        f"spec: {json.dumps(spec)}\n"
    )
    problems, _ = lint.lint([file])
    assert len(problems) == 1 and "spec.analysis.metrics[0].dryRun:" in problems[0], problems
