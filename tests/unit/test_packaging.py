"""The operator distribution carries the operator only: its dependencies, image and CLI."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from tidegate.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
OPERATOR = REPO / "operator" / "tidegate"
# Distribution name -> the module it is imported as, where the two differ.
IMPORT_NAMES = {"PyYAML": "yaml", "prometheus-api-client": "prometheus_api_client"}


def _distribution_names(requirements: list[str]) -> list[str]:
    return [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requirements]


def _imported_top_level_modules(package: Path) -> set[str]:
    found: set[str] = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_every_runtime_dependency_is_imported_by_the_operator() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    imported = _imported_top_level_modules(OPERATOR)
    unused = [
        name
        for name in _distribution_names(project["dependencies"])
        if IMPORT_NAMES.get(name, name.replace("-", "_")) not in imported
    ]
    assert unused == [], f"the operator does not import these runtime dependencies: {unused}"


def test_the_operator_distribution_packages_only_the_operator() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["packages"]["find"]["where"] == ["operator"]
    assert not (REPO / "operator" / "__init__.py").exists()  # never shadows stdlib `operator`
    assert "tidegate_devenv" not in _imported_top_level_modules(OPERATOR)


def test_the_image_copies_only_the_operator_distribution() -> None:
    copied = [
        line.split()[1:-1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    ]
    assert sorted(p for sources in copied for p in sources) == [
        "README.md",
        "operator",
        "pyproject.toml",
    ]


def test_the_operator_command_has_only_operator_commands() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    # The loadtester (spec.analysis.load) ships in the same image: the operator's own helper.
    assert sorted(commands.choices) == ["crds", "loadtester", "run"]  # type: ignore[arg-type]
