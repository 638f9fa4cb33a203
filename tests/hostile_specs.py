"""Rollout specs a careless or hostile author could write, for hypothesis: the examples' specs
(valid), each with a few of its fields replaced, removed or added at random (mostly broken).

Shared by tests/unit/test_hostile_specs.py (validation and the engine, thousands of them) and
tests/e2e/test_hostile_specs.py (the same through the real API server, 500 of them).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@functools.cache
def example_specs() -> list[dict[str, Any]]:
    """Every ProgressiveRollout spec of examples/, as written."""
    specs = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ProgressiveRollout":
                specs.append(doc["spec"])
    return specs


# Values that break a field, or stretch it: wrong types, edges, far past any bound.
HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 100, 101, 65536, 2**31, 2**63, 10**30, -(10**30)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "0",
            "0s",
            "-1s",
            "1d",
            "169h",
            "9999999999h",
            "99999999999999999999999999999h",
            "1.5h30m",
            "x" * 300,
            "{{ nope }}",
            "http://169.254.169.254/latest/meta-data/",
            "ftp://x/",
            "Deployment",
            "StatefulSet",
            "apps/v2",
            "../../etc/passwd",
        ]
    ),
    st.text(max_size=40),
    st.lists(st.integers(-5, 200), max_size=3),
    st.dictionaries(st.sampled_from(["x", "name", "max", "min"]), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a spec (dict keys and list indices)."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _parent(spec: dict[str, Any], path: tuple[Any, ...]) -> Any:
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    return node


@st.composite
def rollout_specs(draw: st.DrawFn) -> dict[str, Any]:
    """An example's spec with zero to four changes: a value replaced by a hostile one, a
    field removed, or an unknown field added."""
    spec = copy.deepcopy(draw(st.sampled_from(example_specs())))  # (the cached one untouched)
    for _ in range(draw(st.integers(0, 4))):
        paths = _paths(spec)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(spec, path)
        change = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if change == "replace":
            parent[path[-1]] = draw(HOSTILE_VALUES)
        elif change == "remove":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "Weight", "exec"]))] = draw(HOSTILE_VALUES)
    return spec
