"""Pure test layers (tests/unit, tests/controller): a test that opens a socket or starts a
process fails."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


def _refuse(what: str) -> Any:
    def refused(*_: object, **__: object) -> NoReturn:
        raise AssertionError(f"this test layer is pure: {what} is not allowed here")

    return refused


@pytest.fixture(autouse=True)
def no_sockets_or_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _refuse("a socket connection"))
    monkeypatch.setattr(socket.socket, "bind", _refuse("a listening socket"))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("a subprocess"))
    yield
