"""kubectl tidegate undo (its check before it asks) and lint of spec.rollbackWindow."""

import argparse
from pathlib import Path
from typing import Any

import pytest
from test_plugin import rollout

from tidegate import api
from tidegate.plugin import cli, lint
from tidegate.plugin.cluster import PluginError

ROLLOUT = (
    "apiVersion: tidegate.io/v1alpha1\nkind: ProgressiveRollout\nmetadata: {name: x}\n"
    "spec:\n  targetRef: {name: a}\n  service: {name: a, port: 80}\n"
    "  trafficRouting: {gatewayAPI: {httpRoute: a}}\n"
    "  strategy: {canary: {steps: [{setWeight: 20}]}}\n"
)


class Recorder:
    """The part of the plugin's Cluster that a request uses."""

    def __init__(self, found: dict[str, Any]) -> None:
        self.found = found
        self.annotated: list[tuple[str, str, str]] = []

    def rollout(self, name: str) -> dict[str, Any]:
        return self.found

    def who_am_i(self) -> str:
        return "alice"

    def annotate(self, name: str, annotation: str, value: str) -> None:
        self.annotated.append((name, annotation, value))


def undo(found: dict[str, Any]) -> Recorder:
    cluster = Recorder(found)
    cli.cmd_undo(cluster, argparse.Namespace(name="shop"))  # type: ignore[arg-type]
    return cluster


def test_undo_asks_with_the_annotation_after_a_promotion() -> None:
    cluster = undo(rollout(phase="Succeeded", previousStableRevision="abc"))
    assert cluster.annotated == [("shop", api.UNDO_ANNOTATION, "alice")]


@pytest.mark.parametrize(
    ("status", "says"),
    [
        ({"phase": "Progressing", "previousStableRevision": "abc"}, "abort stops one"),
        ({"phase": "Succeeded"}, "no previous stable revision"),
        ({"phase": "Initialized"}, "no previous stable revision"),
    ],
)
def test_undo_is_not_asked_where_it_cannot_act(status: dict[str, Any], says: str) -> None:
    cluster = Recorder(rollout(**status))
    with pytest.raises(PluginError, match=says):
        cli.cmd_undo(cluster, argparse.Namespace(name="shop"))  # type: ignore[arg-type]
    assert cluster.annotated == []


def test_the_parser_knows_undo() -> None:
    args = cli.build_parser().parse_args(["undo", "shop", "-n", "ns"])
    assert (args.handler, args.name, args.namespace) == (cli.cmd_undo, "shop", "ns")


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ("{revisions: 2}", None),
        ("{revisions: 0}", "spec.rollbackWindow.revisions:"),
        ("{revisions: 6}", "spec.rollbackWindow.revisions:"),
        ("{}", "spec.rollbackWindow.revisions:"),
        ("{revisions: 2, keep: all}", "spec.rollbackWindow.keep:"),
    ],
)
def test_lint_checks_the_rollback_window(tmp_path: Path, window: str, problem: str | None) -> None:
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(f"{ROLLOUT}  rollbackWindow: {window}\n")
    problems, _ = lint.lint([manifest])
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems
