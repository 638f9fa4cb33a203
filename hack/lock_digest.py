"""The digest of what requirements.lock is resolved from: pyproject.toml's requires-python,
[project] dependencies and build-system requires, normalised (order and spacing do not
count).

`python3 hack/lock_digest.py` prints it; `--check` compares it with the lock's first line
and exits 1, saying what to run, when the lock is stale.
"""

from __future__ import annotations

import hashlib
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "# pyproject-dependencies-sha256: "


def digest() -> str:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    requires = project.get("dependencies", []) + pyproject["build-system"]["requires"]
    wanted = [project.get("requires-python", "")]
    wanted += sorted("".join(dep.split()).lower() for dep in requires)
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()


def main() -> int:
    if sys.argv[1:] != ["--check"]:
        print(digest())
        return 0
    lock = REPO / "requirements.lock"
    first = lock.read_text().partition("\n")[0] if lock.exists() else ""
    if first != PREFIX + digest():
        print(
            "requirements.lock does not match pyproject.toml's dependencies: "
            "run hack/lock.sh and commit the lock with the change",
            file=sys.stderr,
        )
        return 1
    print("requirements.lock matches pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
