"""The Argo CD health check and actions of deploy/argocd, run in real Lua (lupa's embedded
Lua 5.1, the dialect of the gopher-lua interpreter Argo CD embeds), the way Argo CD runs
them: the global `obj` is the object as a Lua table; health.lua returns
`{status=..., message=...}`, discovery.lua a table of actions with `disabled` flags, and an
action's action.lua the object changed.

Shared by the e2e test (which evaluates them on live objects and can record those as
fixtures) and the unit test (which checks the recorded fixtures on every run). Also what
they both expect of each recorded state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lupa import lua51

ROOT = Path(__file__).parents[1]
CUSTOMIZATION = ROOT / "deploy" / "argocd" / "tidegate.io" / "ProgressiveRollout"
FIXTURES = ROOT / "tests" / "fixtures" / "argocd"

ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")
HEALTH_STATUSES = {"Healthy", "Progressing", "Suspended", "Degraded", "Missing", "Unknown"}
# Who an annotation action says asked (the annotations' values name the requester).
REQUESTER = "argocd"
ANNOTATION_ACTIONS = {
    "promote": "tidegate.io/promote",
    "promote-full": "tidegate.io/promote-full",
    "abort": "tidegate.io/abort",
    "retry": "tidegate.io/retry",
}
SPEC_ACTIONS = {"pause": True, "resume": False}  # the spec.paused each one writes

# Each state the e2e test records (tests/fixtures/argocd/<name>.json): the health Argo CD
# must show for it and the actions it must offer. "promoting" is recorded only when a run
# happens to see that short phase; the others every run.
EXPECTED: dict[str, tuple[str, frozenset[str]]] = {
    "initialized": ("Healthy", frozenset({"pause"})),
    "progressing": ("Progressing", frozenset({"promote-full", "abort", "pause"})),
    # The patch response of the pause action: spec.paused set, not yet seen by the operator.
    "pause-not-yet-observed": ("Progressing", frozenset({"promote-full", "abort", "resume"})),
    "paused-by-spec": ("Suspended", frozenset({"promote-full", "abort", "resume"})),
    "paused-awaiting-promotion": (
        "Suspended",
        frozenset({"promote", "promote-full", "abort", "pause"}),
    ),
    "promoting": ("Progressing", frozenset({"pause"})),
    "succeeded": ("Healthy", frozenset({"pause"})),
    "target-not-found": ("Degraded", frozenset({"pause"})),
    "failed": ("Degraded", frozenset({"retry", "pause"})),
    # Not from a run: "failed" with status.phase set to Aborted, until the engine writes it.
    "aborted": ("Degraded", frozenset({"retry", "pause"})),
}
OPTIONAL = {"promoting"}

# What a script may use: Argo CD runs them without io, os.execute, require or loading code.
_SANDBOX = """
local obj = ...
return {
  obj = obj,
  pairs = pairs, ipairs = ipairs, next = next, type = type, select = select,
  tostring = tostring, tonumber = tonumber, error = error, pcall = pcall,
  unpack = unpack, string = string, table = table, math = math,
}
"""


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def _from_lua(value: Any) -> Any:
    """A Lua value as JSON-like Python: a table keyed 1..n is a list, any other a dict (an
    empty table a dict: Lua cannot tell [] from {}); whole numbers are ints."""
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return int(value)
    if not hasattr(value, "items"):
        return value
    items = dict(value.items())
    if items and set(items) == set(range(1, len(items) + 1)):
        return [_from_lua(items[i]) for i in range(1, len(items) + 1)]
    return {str(k): _from_lua(v) for k, v in items.items()}


def run_script(path: Path, obj: dict[str, Any]) -> Any:
    """The value `path` returns with `obj` as its global, in a fresh Lua state."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    env = runtime.execute(_SANDBOX, _to_lua(runtime, obj))
    load = runtime.eval(
        "function(source, name) local f, e = loadstring(source, name); return f or error(e) end"
    )
    compiled = load(path.read_text(), "@" + str(path.relative_to(ROOT)))
    runtime.globals().setfenv(compiled, env)
    return _from_lua(compiled())


def health(obj: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = run_script(CUSTOMIZATION / "health.lua", obj)
    return result


def discovery(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = run_script(CUSTOMIZATION / "actions" / "discovery.lua", obj)
    return result


def enabled_actions(obj: dict[str, Any]) -> frozenset[str]:
    return frozenset(name for name, action in discovery(obj).items() if not action["disabled"])


def act(action: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as `action` leaves it."""
    result: dict[str, Any] = run_script(
        CUSTOMIZATION / "actions" / action / "action.lua", json.loads(json.dumps(obj))
    )
    return result


def normal(value: Any) -> Any:
    """`value` as it survives a trip through Lua: empty lists are empty dicts."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normal(v) for v in value] if value else {}
    return value


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) from `before` to what an action returned, as Argo CD
    sends it for a custom resource: only what the action changed."""
    patch: dict[str, Any] = {}
    for key in before.keys() - after.keys():
        patch[key] = None
    for key, value in after.items():
        old = before.get(key)
        if normal(old) == normal(value):
            continue
        if isinstance(old, dict) and isinstance(value, dict):
            patch[key] = merge_patch(old, value)
        else:
            patch[key] = value
    return patch


def fixture_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return found


def save_fixture(name: str, obj: dict[str, Any]) -> None:
    """A live object as a fixture, without its managedFields (bookkeeping of who wrote which
    field, hundreds of lines that no script reads)."""
    assert name in EXPECTED, name
    kept = json.loads(json.dumps(obj))
    kept.get("metadata", {}).pop("managedFields", None)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    (FIXTURES / f"{name}.json").write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
