"""docs/api.md's field tables against the committed CRDs (crds/*.yaml).

Each table with a Default column is preceded by `<!-- schema: KINDS PREFIX -->`: the CRD(s)
it documents and the path its fields are under. For every row: the field exists; a default
written as a value (`1m`) is the CRD's default, `required` is in the CRD's required list, and
anything else (none, —, a sentence) means the CRD has no default; the values the row lists
for a field with an enum are the enum's; the type is the CRD's. And the other way: every
default in the CRDs is documented, in a table or at a place named below.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidegate.api import NotificationProvider
from tidegate.crd import structural_schema

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api.md"
CRD_FILES = {
    "ProgressiveRollout": REPO / "crds" / "progressiverollout.yaml",
    "MetricTemplate": REPO / "crds" / "metrictemplate.yaml",
    "ClusterMetricTemplate": REPO / "crds" / "clustermetrictemplate.yaml",
}
# Not a CRD: the value of a key of the operator's notifications Secret.
MODELS = {"NotificationProvider": NotificationProvider}

MARKER = re.compile(r"^<!-- schema: (?P<kinds>[A-Za-z,]+)(?: (?P<prefix>[\w.\[\]]+))? -->$")
TICKED = re.compile(r"`([^`]+)`")
# A list of values: `a`, `b` or `c`, each maybe followed by a remark in parentheses.
VALUE = r"`[^`]+`(?: \([^)]*\))?"
VALUE_LIST = re.compile(rf"{VALUE}(?:(?:, or |, | or ){VALUE})*")
# The defaults documented in prose rather than in a table: the path, and text docs/api.md
# must hold that says it.
IN_PROSE = {
    ("ProgressiveRollout", "spec.strategy.canary.steps[].analysis.iterations"): (
        "`analysis: {iterations: <1\N{EN DASH}1000, default 1>}`"
    ),
}
# Fields of one shape documented once: a wave region's metrics are spec.analysis.metrics',
# and waves.before's regions waves.after's.
SAME_AS = {
    "spec.waves.before[]": "spec.waves.after[]",
    "spec.waves.after[].metrics[]": "spec.analysis.metrics[]",
    "spec.waves.after[].prometheus": "spec.analysis.prometheus",
}


@dataclass(frozen=True)
class Row:
    line: int
    kinds: tuple[str, ...]
    path: str  # from the kind's root, e.g. spec.analysis.interval
    type: str | None
    default: str
    rules: str

    def where(self) -> str:
        return f"docs/api.md:{self.line} `{self.path}`"


@functools.cache
def root(kind: str) -> dict[str, Any]:
    if kind in MODELS:
        return structural_schema(MODELS[kind])
    loaded = yaml.safe_load(CRD_FILES[kind].read_text())
    (version,) = loaded["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def split(path: str) -> list[str]:
    """`a.b[].c` as the steps a schema walk takes: a, b, [], c."""
    return [part for name in path.split(".") for part in re.split(r"(\[\])", name) if part]


def node_at(schema: dict[str, Any], path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of `path`, and of the object holding it."""
    parent, node = schema, schema
    for part in split(path):
        parent = node
        if part == "[]":
            node = node["items"]
        else:
            assert part in node.get("properties", {}), f"{path}: no field {part!r}"
            node = node["properties"][part]
    return node, parent


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def fields(cell: str) -> list[str]:
    """The fields a row's first cell names: `a.min` / `.max` is a.min and a.max."""
    names: list[str] = []
    for name in TICKED.findall(cell):
        if name.startswith(".") and names:
            names.append(names[-1].rsplit(".", 1)[0] + name)
        else:
            names.append(name)
    return names


def rows() -> Iterator[Row]:
    lines = DOC.read_text().split("\n")
    marker: re.Match[str] | None = None
    header: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.startswith("|"):
            header = None
            if line.strip():
                marker = MARKER.match(line)
            continue
        if header is None:
            header = cells(line)
            if "Default" in header:
                assert marker is not None, f"docs/api.md:{number}: a table of defaults needs a "
                "`<!-- schema: ... -->` line before it"
            continue
        if set(line) <= set("|-: ") or "Default" not in header or marker is None:
            continue
        values = dict(zip(header, cells(line), strict=True))
        prefix = marker["prefix"] or ""
        for name in fields(values[header[0]]):
            yield Row(
                line=number,
                kinds=tuple(marker["kinds"].split(",")),
                path=f"{prefix}.{name}" if prefix else name,
                type=values.get("Type"),
                default=values["Default"],
                rules=values.get("Rules", ""),
            )


ROWS = list(rows())


def checked_rows() -> list[tuple[str, Row]]:
    return [(kind, row) for row in ROWS for kind in row.kinds]


def ids(pairs: list[tuple[str, Row]]) -> list[str]:
    return [f"{kind}:{row.path}" for kind, row in pairs]


def written(value: Any) -> str:
    """A CRD default as the docs write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_the_tables_are_found() -> None:
    documented = {row.path for row in ROWS}
    for path in (
        "spec.analysis.interval",
        "spec.webhooks[].timeout",
        "spec.strategy.blueGreen.prePromotionAnalysis.iterations",
        "spec.strategy.canary.scaleDownDelaySeconds",
        "spec.analysis.load.method",
        "spec.query",
        "url",
    ):
        assert path in documented


@pytest.mark.parametrize(("kind", "row"), checked_rows(), ids=ids(checked_rows()))
def test_a_documented_default_is_the_crds(kind: str, row: Row) -> None:
    node, parent = node_at(root(kind), row.path)
    name = split(row.path)[-1]
    if row.default.startswith("required"):
        assert name in parent.get("required", []), f"{row.where()}: not required in the CRD"
        assert "default" not in node
    elif row.default in ("`[]`", "`{}`"):
        assert node["type"] == ("array" if row.default == "`[]`" else "object"), row.where()
        assert name not in parent.get("required", []), row.where()
        assert node.get("default", [] if row.default == "`[]`" else {}) in ([], {}), row.where()
    elif row.default.startswith("`"):
        documented = TICKED.findall(row.default)[0]
        assert "default" in node, f"{row.where()}: documented default {documented}, CRD none"
        assert written(node["default"]) == documented, row.where()
    else:
        assert "default" not in node, (
            f"{row.where()}: documented without a default ({row.default!r}), "
            f"CRD default {node['default']!r}"
        )
        assert name not in parent.get("required", []), f"{row.where()}: required in the CRD"


@pytest.mark.parametrize(("kind", "row"), checked_rows(), ids=ids(checked_rows()))
def test_documented_values_are_the_crds_enum(kind: str, row: Row) -> None:
    node, _ = node_at(root(kind), row.path)
    enum = node.get("enum") or node.get("items", {}).get("enum")
    listed = [
        TICKED.findall(found)
        for cell in (row.type or "", row.rules)
        for found in VALUE_LIST.findall(cell)
    ]
    longest = max(listed, key=len, default=[])
    if enum is None:
        if "pattern" in node:  # `http://` or `https://`: the start a pattern checks
            return
        assert len(longest) < 2 or row.type not in ("string", "list of strings"), (
            f"{row.where()}: lists values {longest}, the CRD has no enum"
        )
        return
    assert sorted(longest) == sorted(enum), f"{row.where()}: lists {longest}, CRD enum {enum}"


TYPES = {
    "string": "string",
    "integer": "integer",
    "boolean": "boolean",
    "number": "number",
    "object": "object",
    "duration": "string",
}


@pytest.mark.parametrize(("kind", "row"), checked_rows(), ids=ids(checked_rows()))
def test_a_documented_type_is_the_crds(kind: str, row: Row) -> None:
    if row.type is None:
        return
    node, _ = node_at(root(kind), row.path)
    if row.type.startswith("list"):
        expected = "array"
    elif row.type.startswith("map"):
        expected = "object"
    elif row.type.startswith("`"):  # a list of values: a string enum
        expected = "string"
    else:
        expected = TYPES[row.type]
    assert node["type"] == expected, f"{row.where()}: {row.type}, CRD {node['type']}"
    if row.type == "duration":
        assert "pattern" in node and "x-kubernetes-validations" in node, row.where()


def defaults(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    if "default" in node:
        yield path, node["default"]
    for name, child in node.get("properties", {}).items():
        yield from defaults(child, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from defaults(node["items"], f"{path}[]")


def documented_as(path: str) -> str:
    for alias, same in SAME_AS.items():  # in order: before[] first, then what it became
        if path.startswith(alias):
            path = same + path.removeprefix(alias)
    return path


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_every_crd_default_is_documented(kind: str) -> None:
    documented = {(k, row.path) for row in ROWS for k in row.kinds}
    text = DOC.read_text()
    for path, value in defaults(root(kind)):
        if (kind, path) in IN_PROSE:
            assert IN_PROSE[kind, path] in text
            assert f"default {written(value)}" in IN_PROSE[kind, path]
            continue
        assert (kind, documented_as(path)) in documented, (
            f"{kind} {path}: CRD default {value!r}, not in docs/api.md's tables"
        )


def test_a_wrong_default_or_enum_in_the_docs_would_fail() -> None:
    """The checks above can fail: a row with a default or values the CRD does not have."""
    wrong = Row(1, ("ProgressiveRollout",), "spec.analysis.interval", "duration", "`2m`", "")
    with pytest.raises(AssertionError):
        test_a_documented_default_is_the_crds("ProgressiveRollout", wrong)
    no_default = Row(
        1, ("ProgressiveRollout",), "spec.strategy.blueGreen.prePromotionAnalysis.iterations",
        "integer", "none", "",
    )  # fmt: skip
    with pytest.raises(AssertionError):
        test_a_documented_default_is_the_crds("ProgressiveRollout", no_default)
    enum = Row(
        1, ("ProgressiveRollout",), "spec.analysis.onInconclusive",
        "`RollBack`, `Pause` or `Ignore`", "`RollBack`", "",
    )  # fmt: skip
    with pytest.raises(AssertionError):
        test_documented_values_are_the_crds_enum("ProgressiveRollout", enum)
