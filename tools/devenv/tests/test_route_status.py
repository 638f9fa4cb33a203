"""HTTPRoute status.parents as the dev gateway writes them once a route is applied, and the
rule that keeps its own status write (delivered back by the watch) from looping. Pure: the
patch function is a recording fake."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate_devenv.routestatus import (
    CONTROLLER_NAME,
    DEFAULT_PARENT,
    Refs,
    StatusWriter,
    resolve_refs,
    status_parents,
    status_patch,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
SERVICES = {("demo", "stable"), ("demo", "canary")}
RESOLVED = Refs(True, "ResolvedRefs", "all backendRefs resolved")


def route(
    generation: int = 1,
    backends: tuple[str, ...] = ("stable", "canary"),
    parents: list[dict[str, Any]] | None = None,
    uid: str = "uid-1",
    status: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "rules": [{"backendRefs": [{"name": b, "port": 80, "weight": 50} for b in backends]}]
    }
    if parents is not None:
        spec["parentRefs"] = parents
    obj: dict[str, Any] = {
        "metadata": {"namespace": "demo", "name": "shop", "generation": generation, "uid": uid},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = {"parents": status}
    return obj


def conditions(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in entry["conditions"]}


def test_a_route_without_parent_refs_reports_to_the_dev_gateway() -> None:
    [entry] = status_parents(route(generation=4), RESOLVED, T0)
    assert entry["parentRef"] == DEFAULT_PARENT
    assert entry["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "tidegate-dev",
    }
    assert entry["controllerName"] == CONTROLLER_NAME == "tidegate.io/dev-gateway"
    found = conditions(entry)
    assert set(found) == {"Accepted", "ResolvedRefs"}
    for kind in ("Accepted", "ResolvedRefs"):
        assert found[kind]["status"] == "True"
        assert found[kind]["reason"] == kind
        assert found[kind]["observedGeneration"] == 4
        assert found[kind]["lastTransitionTime"] == "2026-03-01T12:00:00Z"
        assert isinstance(found[kind]["message"], str)


def test_one_entry_per_parent_ref_with_the_ref_copied() -> None:
    parents = [
        {"name": "public", "namespace": "gateways", "sectionName": "https"},
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal"},
    ]
    entries = status_parents(route(parents=parents), RESOLVED, T0)
    assert [e["parentRef"] for e in entries] == parents
    assert all(e["controllerName"] == CONTROLLER_NAME for e in entries)


def test_a_missing_service_is_backend_not_found() -> None:
    refs = resolve_refs(route(backends=("stable", "gone")), SERVICES)
    assert (refs.resolved, refs.reason) == (False, "BackendNotFound")
    assert "demo/gone" in refs.message
    [entry] = status_parents(route(generation=2, backends=("stable", "gone")), refs, T0)
    found = conditions(entry)
    assert found["Accepted"]["status"] == "True"  # accepted, but not all of it resolves
    assert found["ResolvedRefs"]["status"] == "False"
    assert found["ResolvedRefs"]["reason"] == "BackendNotFound"
    assert found["ResolvedRefs"]["observedGeneration"] == 2


def test_refs_across_namespaces_mirrors_and_kinds() -> None:
    other = route(backends=())
    other["spec"]["rules"][0]["backendRefs"] = [{"name": "api", "namespace": "shared", "port": 80}]
    assert resolve_refs(other, SERVICES).reason == "BackendNotFound"
    assert resolve_refs(other, {("shared", "api")}).resolved
    mirrored = route()
    mirrored["spec"]["rules"][0]["filters"] = [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}
    ]
    assert resolve_refs(mirrored, SERVICES).message == "Services not found: demo/shadow"
    bucket = route(backends=())
    bucket["spec"]["rules"][0]["backendRefs"] = [
        {"group": "example.com", "kind": "S3", "name": "b"}
    ]
    assert resolve_refs(bucket, SERVICES).reason == "InvalidKind"


def test_transition_times_change_only_with_a_condition_s_status() -> None:
    broken = route(generation=1, backends=("gone",))
    first = status_parents(broken, resolve_refs(broken, SERVICES), T0)
    later = T0 + timedelta(minutes=5)
    second = status_parents(route(generation=2), RESOLVED, later, previous=first)
    found = conditions(second[0])
    assert found["Accepted"]["lastTransitionTime"] == "2026-03-01T12:00:00Z"  # True all along
    assert found["ResolvedRefs"]["lastTransitionTime"] == "2026-03-01T12:05:00Z"  # False → True
    assert found["Accepted"]["observedGeneration"] == 2


def test_the_patch_keeps_other_controllers_entries() -> None:
    theirs = {"parentRef": {"name": "edge"}, "controllerName": "example.com/edge", "conditions": []}
    stale = {"parentRef": DEFAULT_PARENT, "controllerName": CONTROLLER_NAME, "conditions": []}
    ours = status_parents(route(), RESOLVED, T0)
    body = status_patch(route(status=[theirs, stale]), ours)
    assert body == {"status": {"parents": [theirs, *ours]}}


# --- when to write ----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False

    def __call__(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        if self.fail:
            raise ConnectionError("the API server is away")
        self.calls.append((namespace, name, body))

    def observed(self) -> list[int]:
        """The Accepted observedGeneration of each write."""
        return [
            conditions(body["status"]["parents"][-1])["Accepted"]["observedGeneration"]
            for _, _, body in self.calls
        ]


def as_written_back(obj: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """The route as the watch delivers it after the last status write: same generation."""
    return {**obj, "status": recorder.calls[-1][2]["status"]}


def write(writer: StatusWriter, routes: list[dict[str, Any]], services: Any = SERVICES) -> int:
    return asyncio.run(writer.write_due(routes, services))


def test_the_gateway_s_own_status_write_does_not_loop() -> None:
    patch = Recorder()
    writer = StatusWriter(patch, clock=lambda: T0)
    assert write(writer, [route(generation=1)]) == 0
    assert patch.observed() == [1]
    assert patch.calls[0][:2] == ("demo", "shop")
    # The write comes back as a MODIFIED event with the same generation: nothing to write.
    echoed = as_written_back(route(generation=1), patch)
    assert write(writer, [echoed]) == 0
    assert writer.due([echoed], SERVICES) == []
    assert write(writer, [route(generation=1)]) == 0  # nor from an older copy of it
    assert patch.observed() == [1]
    # A new generation applied: written once.
    assert write(writer, [route(generation=2)]) == 0
    assert write(writer, [as_written_back(route(generation=2), patch)]) == 0
    assert patch.observed() == [1, 2]


def test_resolved_refs_changing_alone_is_written() -> None:
    patch = Recorder()
    writer = StatusWriter(patch, clock=lambda: T0)
    write(writer, [route(generation=3)], services={("demo", "stable")})
    write(writer, [route(generation=3)], services=SERVICES)  # the canary Service appears
    states = [
        conditions(body["status"]["parents"][0])["ResolvedRefs"]["status"]
        for _, _, body in patch.calls
    ]
    assert states == ["False", "True"]


def test_a_failed_write_is_tried_again() -> None:
    patch = Recorder()
    writer = StatusWriter(patch, clock=lambda: T0)
    patch.fail = True
    assert write(writer, [route(generation=1)]) == 1
    patch.fail = False
    assert write(writer, [route(generation=1)]) == 0
    assert patch.observed() == [1]


def test_a_restarted_gateway_does_not_rewrite_a_current_status() -> None:
    patch = Recorder()
    write(StatusWriter(patch, clock=lambda: T0), [route(generation=5)])
    current = as_written_back(route(generation=5), patch)
    again = StatusWriter(patch, clock=lambda: T0 + timedelta(hours=1))
    assert again.due([current], SERVICES) == []
    assert (
        len(
            again.due([{**current, "metadata": {**current["metadata"], "generation": 6}}], SERVICES)
        )
        == 1
    )


def test_a_recreated_route_is_written_even_at_the_same_generation() -> None:
    patch = Recorder()
    writer = StatusWriter(patch, clock=lambda: T0)
    write(writer, [route(generation=1, uid="first")])
    write(writer, [])  # deleted
    write(writer, [route(generation=1, uid="second")])
    assert patch.observed() == [1, 1]


def test_run_retries_a_failed_write_periodically() -> None:
    patch = Recorder()
    patch.fail = True
    writer = StatusWriter(patch, clock=lambda: T0)

    async def scenario() -> None:
        wake = asyncio.Event()
        task = asyncio.create_task(writer.run(lambda: ([route()], SERVICES), wake, period=0.01))
        await asyncio.sleep(0.03)
        assert patch.calls == []
        patch.fail = False
        async with asyncio.timeout(5):
            while not patch.calls:
                await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert patch.observed() == [1]


def test_times_are_rfc3339_seconds() -> None:
    [entry] = status_parents(route(), RESOLVED, datetime(2026, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC))
    stamp = conditions(entry)["Accepted"]["lastTransitionTime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert stamp == "2026-01-02T03:04:05Z"
