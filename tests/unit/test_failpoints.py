"""The failpoint the e2e tests use to kill the operator at an exact instant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tidegate import failpoints
from tidegate.api import Outbox, PendingEvent


class Died(Exception):
    pass


def outbox(*reasons: str) -> Outbox:
    events = [PendingEvent(type="Normal", reason=r, message="m") for r in reasons]
    return Outbox(id="1", at=datetime.now(UTC), events=events)


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """os._exit as the failpoint calls it, recorded (and raised, for it never returns)."""
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise Died

    monkeypatch.setattr(failpoints.os, "_exit", exit_)
    return codes


def test_the_process_dies_after_the_status_that_holds_the_named_event(
    monkeypatch: pytest.MonkeyPatch, exits: list[int]
) -> None:
    monkeypatch.setattr(failpoints, "_POINT", "after-status")
    monkeypatch.setattr(failpoints, "_DETAIL", "Promoted")
    failpoints.after_status(None)
    failpoints.after_status(outbox("Promoting"))
    assert exits == []
    with pytest.raises(Died):
        failpoints.after_status(outbox("Resumed", "Promoted"))
    assert exits == [failpoints.EXIT_CODE]


@pytest.mark.parametrize(
    "point, detail", [("", ""), ("after-status", "Aborted"), ("elsewhere", "Promoted")]
)
def test_without_that_failpoint_nothing_happens(
    monkeypatch: pytest.MonkeyPatch, exits: list[int], point: str, detail: str
) -> None:
    monkeypatch.setattr(failpoints, "_POINT", point)
    monkeypatch.setattr(failpoints, "_DETAIL", detail)
    failpoints.after_status(outbox("Promoted"))
    assert exits == []
