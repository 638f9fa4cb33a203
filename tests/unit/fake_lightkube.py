"""A fake of the few lightkube AsyncClient calls the router adapters make: get and merge
patch of objects held by name, with resourceVersions and optional 409 conflicts."""

from __future__ import annotations

import copy
from typing import Any

from lightkube import ApiError

Obj = dict[str, Any]


class _Stored:
    def __init__(self, obj: Obj) -> None:
        self.obj = obj

    def to_dict(self) -> Obj:
        return copy.deepcopy(self.obj)


class _Response:
    def __init__(self, code: int) -> None:
        self.status_code = code

    def json(self) -> Obj:
        return {"code": self.status_code, "message": "fake", "status": "Failure"}


def merge(target: Obj, patch: Obj) -> None:
    """RFC 7386 in place (lists are replaced whole)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeClient:
    def __init__(self, *objects: Obj) -> None:
        self.objects = {o["metadata"]["name"]: o for o in objects}
        self.patches: list[tuple[str, Obj]] = []
        self.conflicts = 0  # the next N patches fail with 409, as a concurrent writer causes

    async def get(self, kind: Any, name: str, namespace: str) -> _Stored:
        if name not in self.objects:
            raise ApiError(response=_Response(404))  # type: ignore[arg-type]
        return _Stored(self.objects[name])

    async def patch(self, kind: Any, name: str, patch: Obj, **_: Any) -> None:
        stored = self.objects[name]
        if self.conflicts:
            self.conflicts -= 1
            stored["metadata"]["resourceVersion"] += "x"
            raise ApiError(response=_Response(409))  # type: ignore[arg-type]
        wanted = patch.get("metadata", {}).get("resourceVersion")
        assert wanted in (None, stored["metadata"]["resourceVersion"]), "a stale write"
        self.patches.append((name, patch))
        merge(stored, {k: v for k, v in patch.items() if k != "metadata"})
        stored["metadata"]["resourceVersion"] += "+"
