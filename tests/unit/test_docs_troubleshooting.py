"""docs/troubleshooting.md names every reason the operator can put on a rollout, as a
condition's reason or an Event's, and no other.

The reasons are found by reading the operator's source (its syntax tree), at the places a
reason is given:

- a reason passed to what says it: `call.event`, `call.say`, `roll_back`,
  `fail_before_start`, `start_or_wait`, `start_rollout`, `_refuse`, the reconciler's
  `event`, a step's `Hold`, a `TemplateProblem` or port error made with one;
- a `reason=` or `event_reason=` argument, and a parameter of either name's default;
- a value assigned to `reason`, and every string of a module constant named `*REASON*`;
- a problem tuple `(Reason, message)` or a Wave condition `(ok, Reason, message)`;
- the members of a class named `Reason` (a region's reason in spec.waves);
- and the phases (`RolloutPhase`): Ready and Progressing name the phase when nothing
  else was said.

`tidegate/notify` and `tidegate/plugin` only read reasons, and are not scanned.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from tidegate import api

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "tidegate"
DOC = REPO / "docs" / "troubleshooting.md"
READERS = ("notify", "plugin")

CAMEL = re.compile(r"[A-Z][A-Za-z]*[a-z][A-Za-z]*\Z")
EVENT_TYPES = {"Normal", "Warning"}
# What takes a reason among its arguments (the Event type apart).
SAYERS = {
    "event",
    "say",
    "roll_back",
    "fail_before_start",
    "start_or_wait",
    "waiting_for_wave",
    "start_rollout",
    "_refuse",
    "Hold",
    "TemplateProblem",
    "TemplateError",
    "AdapterError",
}
REASON_NAMES = {"reason", "event_reason"}
# What posts a Warning Event of the reason it is given.
WARNS = {"fail_before_start", "_refuse"}
# A documented reason: the first cell of a table row, in backticks; the second says where.
ROW = re.compile(r"^\|\s*`([A-Za-z]+)`\s*\|([^|]*)\|", re.MULTILINE)


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in READERS:
            continue
        yield path, ast.parse(path.read_text(), str(path))


def _constants() -> dict[str, str]:
    """Every module-level `NAME = "Text"` of the package, by name."""
    found: dict[str, str] = {}
    for _, tree in _sources():
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.value.value
    return found


def _words(node: ast.AST | None, constants: dict[str, str]) -> set[str]:
    """The CamelCase words `node` can be: a string, a module constant, either branch of an
    `x if c else y`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value} if CAMEL.match(node.value) else set()
    if isinstance(node, ast.Name) and node.id in constants:
        return _words(ast.Constant(constants[node.id]), constants)
    if isinstance(node, ast.IfExp):
        return _words(node.body, constants) | _words(node.orelse, constants)
    return set()


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _is_message(node: ast.AST) -> bool:
    """Whether `node` looks like a message: a variable, an f-string, a call."""
    return isinstance(node, ast.Name | ast.JoinedStr | ast.Call | ast.Attribute)


def _is_bool(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, bool)


def _is_condition_type(node: ast.AST) -> bool:
    """`ConditionType.X`: a condition's type."""
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ConditionType"
    )


def _in_code(tree: ast.Module, constants: dict[str, str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if _called(node) in SAYERS:
                for arg in node.args:
                    found |= _words(arg, constants) - EVENT_TYPES
            for keyword in node.keywords:
                if keyword.arg in REASON_NAMES:
                    found |= _words(keyword.value, constants)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            spec = node.args
            positional = spec.posonlyargs + spec.args
            undefaulted: list[ast.expr | None] = [None] * (len(positional) - len(spec.defaults))
            defaults = [*undefaulted, *spec.defaults, *spec.kw_defaults]
            for param, default in zip(positional + spec.kwonlyargs, defaults, strict=True):
                if param.arg in REASON_NAMES:
                    found |= _words(default, constants)
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if names & REASON_NAMES or any("REASON" in name for name in names):
                found |= {w for n in ast.walk(node.value) for w in _words(n, constants)}
        elif isinstance(node, ast.Tuple):
            elts = node.elts
            if len(elts) == 2 and _is_message(elts[1]):  # (Reason, message): a problem
                found |= _words(elts[0], constants)
            if len(elts) == 3 and _is_bool(elts[0]) and _is_message(elts[2]):
                found |= _words(elts[1], constants)  # (ok, Reason, message): the Wave
            if len(elts) == 3 and _is_condition_type(elts[0]):
                found |= _words(elts[2], constants)  # (type, ok, Reason): the conditions
        elif isinstance(node, ast.ClassDef) and node.name == "Reason":
            for item in node.body:
                if isinstance(item, ast.Assign):
                    found |= _words(item.value, constants)
    return found


def reasons_in_code() -> set[str]:
    constants = _constants()
    found = {phase.value for phase in api.RolloutPhase}
    for _, tree in _sources():
        found |= _in_code(tree, constants)
    return found


def event_types_in_code() -> set[tuple[str, str]]:
    """(reason, Normal or Warning) of every Event posted with both written out."""
    constants = _constants()
    found: set[tuple[str, str]] = set()
    for _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(node) in {"event", *WARNS}:
                words = {w for a in node.args for w in _words(a, constants)}
                types = {"Warning"} if _called(node) in WARNS else words & EVENT_TYPES
                found |= {(reason, type_) for reason in words - EVENT_TYPES for type_ in types}
    return found


def rows_of_doc() -> list[tuple[str, str]]:
    """(reason, where) of each documented reason."""
    return [(reason, where.strip()) for reason, where in ROW.findall(DOC.read_text())]


def reasons_in_doc() -> list[str]:
    return [reason for reason, _ in rows_of_doc()]


def test_the_scan_finds_the_reasons_of_every_kind_of_place() -> None:
    found = reasons_in_code()
    # One of each place the scan reads; a scan that misses a kind of place fails here.
    assert {
        "RolledBack",  # call.event
        "Analysing",  # call.say
        "ProgressDeadlineExceeded",  # roll_back
        "WaveTimeout",  # fail_before_start
        "RolloutRestarted",  # start_or_wait
        "InvalidStatus",  # _refuse
        "WebhookCalled",  # the reconciler's event
        "HandedBack",  # the hand-back's event
        "HoldingWeight",  # Hold
        "ScalingDown",  # Hold, through a module constant
        "WaveReady",  # call.event, through a constant of another module
        "TemplateNotFound",  # TemplateProblem
        "NameConflict",  # reason=
        "WorkloadFailed",  # a port error's default reason
        "Forbidden",  # the API server's answers
        "ServerError",  # ... and what is not among them
        "TrafficIncreaseHeld",  # a *REASON* mapping
        "InternalError",  # a problem tuple
        "UpstreamReady",  # the Wave condition
        "AsExpected",  # the engine's conditions
        "Soaking",  # a region's reason
        "WaitingForWave",  # a phase
    } <= found


def test_every_reason_the_operator_gives_is_documented() -> None:
    missing = sorted(reasons_in_code() - set(reasons_in_doc()))
    assert not missing, f"docs/troubleshooting.md does not document: {', '.join(missing)}"


def test_every_documented_reason_is_one_the_operator_gives() -> None:
    unknown = sorted(set(reasons_in_doc()) - reasons_in_code())
    assert not unknown, f"docs/troubleshooting.md documents reasons no code gives: {unknown}"


def test_an_event_is_documented_with_its_type() -> None:
    where = dict(rows_of_doc())
    events = event_types_in_code()
    assert ("RolledBack", "Warning") in events and ("Promoted", "Normal") in events
    wrong = sorted(
        f"{reason} ({type_})" for reason, type_ in events if type_ not in where.get(reason, "")
    )
    assert not wrong, f"docs/troubleshooting.md does not give these Events their type: {wrong}"


def test_each_reason_is_documented_once() -> None:
    rows = reasons_in_doc()
    twice = sorted({r for r in rows if rows.count(r) > 1})
    assert not twice, f"documented more than once: {twice}"
