"""The operator distribution carries the operator only: its dependencies, image and CLI."""

from __future__ import annotations

import ast
import importlib.util
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


def test_the_image_copies_only_the_operator_distribution_and_its_lock() -> None:
    copied = [
        line.split()[1:-1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and not line.startswith("COPY --from=")
    ]
    assert sorted(p for sources in copied for p in sources) == [
        "README.md",
        "operator",
        "pyproject.toml",
        "requirements.lock",
    ]


def test_the_lock_pins_every_package_by_hash_and_matches_pyproject() -> None:
    """What `make lint` checks (hack/lock_digest.py), and that pip's --require-hashes can
    install it: every requirement pinned with ==, each with a hash."""
    lock = (REPO / "requirements.lock").read_text()
    assert lock_matches_pyproject()
    entries = [e for e in lock.split("\n") if e and not e.startswith((" ", "#"))]
    assert entries and all("==" in e and e.endswith("\\") for e in entries), entries[:3]
    pinned = {e.split("==")[0].lower() for e in entries}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        name = dependency.split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert name.replace("_", "-") in pinned, name
    assert "setuptools" in pinned  # the build backend, so the image downloads nothing else


def lock_matches_pyproject() -> bool:
    spec = importlib.util.spec_from_file_location("lock_digest", REPO / "hack" / "lock_digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first = (REPO / "requirements.lock").read_text().partition("\n")[0]
    return bool(first == module.PREFIX + module.digest())


def test_the_operator_command_has_only_operator_commands() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    # The loadtester (spec.analysis.load) ships in the same image: the operator's own helper.
    assert sorted(commands.choices) == ["crds", "loadtester", "run"]  # type: ignore[arg-type]
