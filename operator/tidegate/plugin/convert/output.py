"""What a conversion writes, and the helpers the Flagger and Argo converters share.

An `Output` is one object to write, with the TODO and WARNING lines to put above it;
`ConvertError` is a document that cannot be converted at all. The helpers name and describe
the source documents, build an object's metadata, add a TODO for each field with no
counterpart, and spell argument names and durations as tidegate does. `render` writes the
outputs as one YAML stream. Both converters need these, so they live here and neither
converter imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tidegate.durations import parse_duration

Obj = dict[str, Any]


class ConvertError(ValueError):
    """A document that cannot be converted at all."""


@dataclass
class Output:
    """One object to write, and the TODO lines to put above it."""

    obj: Obj
    source: str
    todos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def todo(self, path: str, why: str) -> None:
        self.todos.append(f"{path}: {why}")


def name_of(doc: Mapping[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("name") or "")


def metadata_of(doc: Mapping[str, Any], name: str | None = None) -> Obj:
    source = doc.get("metadata") or {}
    meta: Obj = {"name": name or source.get("name")}
    if source.get("namespace"):
        meta["namespace"] = source["namespace"]
    return meta


def describe(doc: Mapping[str, Any]) -> str:
    namespace = (doc.get("metadata") or {}).get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{doc.get('apiVersion')} {doc.get('kind')} {where}{name_of(doc)}"


def leftover(out: Output, path: str, section: Mapping[str, Any], known: Iterable[str]) -> None:
    """A TODO for each key of `section` not in `known`."""
    taken = set(known)
    for key in section:
        if key not in taken:
            out.todo(f"{path}.{key}", "no counterpart in tidegate")


def arg_name_of(name: str) -> str:
    """An argument name as tidegate spells them (letters, digits and _)."""
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return fixed if re.match(r"[A-Za-z_]", fixed) else f"_{fixed}"


def duration_text(value: Any) -> str:
    """A duration as tidegate writes it; Argo also takes a bare number of seconds."""
    if isinstance(value, int | float):
        return f"{int(value)}s"
    return str(value)


def duration_seconds(value: Any) -> float:
    return parse_duration(duration_text(value)).total_seconds()


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # an object the input shares is written out each time


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(outputs: Iterable[Output], skipped: Iterable[str]) -> str:
    """The YAML stream: each object with its TODO comments above it; a document with no
    object (a template that could not be converted) keeps only its comments."""
    parts = []
    for out in outputs:
        lines = [f"# Converted from {out.source}"]
        lines += [f"# WARNING: {text}".replace("\n", " ") for text in out.warnings]
        lines += [f"# TODO: {todo}".replace("\n", " ") for todo in out.todos]
        body = yaml.dump(out.obj, Dumper=_Dumper, sort_keys=False, width=1 << 20) if out.obj else ""
        parts.append("\n".join(lines) + "\n" + body)
    left = list(skipped)
    if left:
        parts.append("\n".join(f"# Not converted, kept as it is: {d}" for d in left) + "\n")
    return "---\n".join(parts)
