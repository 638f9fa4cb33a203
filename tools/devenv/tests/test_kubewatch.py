"""The informer on a scripted list function, as the official client's list functions behave
when listed and watched: list, watch from the list's version, resume from the last version
seen, relist on 410 Gone, and a stop that cuts off an open watch."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tidegate_devenv import kubewatch
from tidegate_devenv.kubewatch import Informer
from tidegate_devenv.waiting import wait_until_async

Obj = dict[str, Any]
# A watch with nothing more to send stays open this long at most, as timeout_seconds would
# end it; the tests stop it long before.
HOLD_LIMIT = 30.0


def pod(name: str, version: str, phase: str = "Running") -> Obj:
    return {
        "metadata": {"namespace": "shop", "name": name, "resourceVersion": version},
        "status": {"phase": phase},
    }


def event(kind: str, obj: Obj) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


GONE = event("ERROR", {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"})


class _Socket:
    def __init__(self) -> None:
        self.shut = threading.Event()

    def shutdown(self, how: int) -> None:  # what Watch.stop() does to the open connection
        self.shut.set()


class _Connection:
    def __init__(self) -> None:
        self.sock = _Socket()


class _Response:
    """An urllib3 response as `_preload_content=False` returns it."""

    status = 200

    def __init__(self, body: bytes = b"", lines: list[bytes] | None = None, hold: bool = False):
        self.data = body
        self.lines = lines or []
        self.hold = hold
        self.connection = _Connection()

    def stream(self, amt: int | None = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self.lines
        if self.hold:  # an open watch with nothing to say, until the connection is shut
            self.connection.sock.shut.wait(HOLD_LIMIT)

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeLister:
    """One resource's list function: lists answer with the next of `listings`, watches
    play the next of `watches` (its lines; then it ends, or with `hold` stays open)."""

    def __init__(self) -> None:
        self.listings: queue.Queue[tuple[str, list[Obj]]] = queue.Queue()
        self.watches: queue.Queue[tuple[list[bytes], bool]] = queue.Queue()
        self.lists = 0
        self.watched_from: list[str | None] = []

    def __call__(self, *args: Any, watch: bool = False, **kwargs: Any) -> _Response:
        assert kwargs["_preload_content"] is False
        if not watch:
            self.lists += 1
            version, items = self.listings.get(timeout=5)
            body = {"metadata": {"resourceVersion": version}, "items": items}
            return _Response(json.dumps(body).encode())
        assert kwargs["timeout_seconds"] == kubewatch.WATCH_SERVER_TIMEOUT
        self.watched_from.append(kwargs.get("resource_version"))
        try:
            lines, hold = self.watches.get_nowait()
        except queue.Empty:
            lines, hold = [], True
        return _Response(lines=lines, hold=hold)


def informer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("informer-")]


async def until(condition: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return condition()

    await wait_until_async(probe, what, 10, interval=0.005)


async def settled(informer: Informer, want: dict[str, str]) -> None:
    """Until the informer holds exactly the pods `want` (name: phase)."""

    def phases() -> dict[str, str]:
        return {name: obj["status"]["phase"] for (_, name), obj in informer.items.items()}

    await until(lambda: phases() == want, f"pods {want}")


async def stop(task: asyncio.Task[None]) -> float:
    """Cancel the informer's task; the seconds until its worker thread had ended."""
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    took = time.monotonic() - began
    # The thread has said it ends; it may take a moment more to be gone.
    for thread in informer_threads():
        await asyncio.to_thread(thread.join, 2)
    assert not informer_threads()
    return took


def test_lists_then_watches_from_the_last_version_seen() -> None:
    lister = FakeLister()
    lister.listings.put(("5", [pod("a", "5")]))
    lister.watches.put(
        (
            [
                event("ADDED", pod("b", "6", "Pending")),
                event("MODIFIED", pod("a", "7", "Failed")),
                event("BOOKMARK", {"metadata": {"resourceVersion": "9"}}),
            ],
            False,  # then the server ends the watch, as at timeout_seconds
        )
    )
    lister.watches.put(([event("DELETED", pod("b", "10"))], True))
    changes = 0

    def changed() -> None:
        nonlocal changes
        changes += 1

    async def scenario() -> None:
        informer = Informer("pods", lister, changed)
        task = asyncio.create_task(informer.run())
        await settled(informer, {"a": "Failed"})
        assert informer.synced.is_set()
        assert lister.lists == 1  # a watch ended by the server is resumed, not relisted
        assert lister.watched_from == ["5", "9"]  # the bookmark's version counts
        assert changes == 4  # the list, and each event but the bookmark
        # The second watch is open and quiet: stopping cuts it off, without waiting for
        # its timeout_seconds.
        assert await stop(task) < 5

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_relists_when_the_watched_version_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubewatch, "RETRY_DELAY", 0.01)
    lister = FakeLister()
    lister.listings.put(("5", [pod("a", "5"), pod("b", "5")]))
    lister.listings.put(("20", [pod("a", "20", "Succeeded")]))
    lister.watches.put(([GONE], False))
    lister.watches.put(([], True))

    async def scenario() -> None:
        informer = Informer("pods", lister, lambda: None)
        task = asyncio.create_task(informer.run())
        await settled(informer, {"a": "Succeeded"})  # b went while the watch was gone
        assert lister.lists == 2
        await until(lambda: len(lister.watched_from) == 2, "a watch after the relist")
        assert lister.watched_from == ["5", "20"]
        await stop(task)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_failing_list_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubewatch, "RETRY_DELAY", 0.01)
    lister = FakeLister()
    attempts = 0

    def flaky(*args: Any, **kwargs: Any) -> _Response:
        nonlocal attempts
        if not kwargs.get("watch"):
            attempts += 1
            if attempts == 1:
                raise ConnectionRefusedError("the API server is not up yet")
        return lister(*args, **kwargs)

    lister.listings.put(("3", [pod("a", "3")]))

    async def scenario() -> None:
        informer = Informer("pods", flaky, lambda: None)
        task = asyncio.create_task(informer.run())
        await settled(informer, {"a": "Running"})
        assert attempts == 2
        await stop(task)

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_relist_is_told_object_by_object() -> None:
    old = {("shop", n): pod(n, "5") for n in ("a", "b", "c")}
    new = {("shop", "a"): pod("a", "5"), ("shop", "b"): pod("b", "6"), ("shop", "d"): pod("d", "1")}
    assert kubewatch.relist_changes(old, new) == [
        (("shop", "b"), pod("b", "6")),
        (("shop", "d"), pod("d", "1")),
        (("shop", "c"), None),
    ]


def test_each_object_change_is_told_before_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubewatch, "RETRY_DELAY", 0.01)
    lister = FakeLister()
    lister.listings.put(("5", [pod("a", "5"), pod("b", "5")]))
    lister.watches.put(([event("MODIFIED", pod("a", "7", "Failed")), GONE], False))
    lister.listings.put(("20", [pod("a", "20", "Succeeded")]))
    lister.watches.put(([], True))
    told: list[tuple[str, str | None]] = []
    changes: list[int] = []

    def on_object(key: tuple[str, str], obj: Obj | None) -> None:
        told.append((key[1], None if obj is None else obj["metadata"]["resourceVersion"]))

    async def scenario() -> None:
        informer = Informer("pods", lister, lambda: changes.append(len(told)), on_object=on_object)
        task = asyncio.create_task(informer.run())
        await settled(informer, {"a": "Succeeded"})
        await stop(task)

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert told == [("a", "5"), ("b", "5"), ("a", "7"), ("a", "20"), ("b", None)]
    assert changes == [2, 3, 5]  # each list or event's objects, then on_change
