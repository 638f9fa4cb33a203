"""The route-status writer of environments without the dev gateway (`statusonly`): its
command line, its informers (HTTPRoutes and Services, never Pods), which events wake it,
and, on scripted list functions, a route's status written once both lists are in."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from test_kubewatch import FakeLister, event, until
from test_route_status import SERVICES as SHOP_SERVICES
from test_route_status import Recorder, conditions
from test_route_status import route as shop_route

from tidegate_devenv import statusonly
from tidegate_devenv.delayed import PODS, ROUTES, SERVICES
from tidegate_devenv.environment import ROUTE_STATUS_READY, route_status_command
from tidegate_devenv.kubewatch import ClusterMirror
from tidegate_devenv.routestatus import StatusWriter

Obj = dict[str, Any]


def route(name: str = "shop", generation: int = 1, uid: str = "uid-1", version: str = "1") -> Obj:
    return {
        "metadata": {
            "namespace": "demo",
            "name": name,
            "generation": generation,
            "uid": uid,
            "resourceVersion": version,
        },
        "spec": {"rules": [{"backendRefs": [{"name": "stable", "port": 80}]}]},
    }


def service(name: str, version: str = "1") -> Obj:
    return {"metadata": {"namespace": "demo", "name": name, "resourceVersion": version}}


# --- the command line ---------------------------------------------------------------------


def test_the_environment_starts_it_with_its_kubeconfig_and_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / ROUTE_STATUS_READY
    command = route_status_command(tmp_path / "kubeconfig", ready)
    assert command[:3] == [sys.executable, "-m", "tidegate_devenv.statusonly"]
    args = statusonly.parse_args(command[3:])
    assert args.kubeconfig == str(tmp_path / "kubeconfig")
    assert args.ready_file == str(ready)


def test_without_flags_it_takes_kubeconfig_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/somewhere/kubeconfig")
    args = statusonly.parse_args([])
    assert (args.kubeconfig, args.ready_file) == ("/somewhere/kubeconfig", None)


# --- the informers ------------------------------------------------------------------------


def test_it_watches_routes_and_services_only() -> None:
    mirror = statusonly.status_mirror(client.ApiClient(), lambda *_: None)
    assert set(mirror.informers) == {ROUTES, SERVICES}
    with pytest.raises(KeyError):
        mirror.pods  # noqa: B018 (the property is what is tested)


def test_the_gateway_s_mirror_still_watches_all_three() -> None:
    mirror = ClusterMirror(client.ApiClient(), lambda: None)
    assert set(mirror.informers) == {ROUTES, SERVICES, PODS}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="deployments"):
        ClusterMirror(client.ApiClient(), lambda: None, kinds=(ROUTES, "deployments"))


# --- which events wake the writer ---------------------------------------------------------


def test_a_route_s_own_status_write_coming_back_wakes_nothing() -> None:
    changes = statusonly.Changes()
    key = ("demo", "shop")
    assert changes.matters(ROUTES, key, route(generation=1))
    written = {**route(generation=1, version="2"), "status": {"parents": []}}
    assert not changes.matters(ROUTES, key, written)
    assert changes.matters(ROUTES, key, route(generation=2, version="3"))
    assert changes.matters(ROUTES, key, route(generation=2, uid="recreated"))
    assert changes.matters(ROUTES, key, None)
    assert not changes.matters(ROUTES, key, None)  # already gone


def test_services_matter_only_when_they_appear_or_go() -> None:
    changes = statusonly.Changes()
    key = ("demo", "stable")
    assert changes.matters(SERVICES, key, service("stable"))
    assert not changes.matters(SERVICES, key, service("stable", version="2"))
    assert changes.matters(SERVICES, key, None)
    assert not changes.matters(SERVICES, key, None)


# --- writes at a time -------------------------------------------------------------------


class SlowPatch:
    """A patch that takes a while, counting how many run at once; `fail` names routes
    whose write fails."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.fail = fail
        self.written: list[str] = []
        self.running = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        if name in self.fail:
            raise ConnectionError("the API server is away")
        self.written.append(name)


def routes_named(*names: str) -> list[Obj]:
    out = []
    for name in names:
        obj = shop_route()
        obj["metadata"] = {**obj["metadata"], "name": name, "uid": f"uid-{name}"}
        out.append(obj)
    return out


def test_writes_go_out_parallel_at_a_time() -> None:
    patch = SlowPatch(fail=frozenset({"r5"}))
    writer = StatusWriter(patch, parallel=3)
    routes = routes_named(*(f"r{i}" for i in range(7)))
    assert asyncio.run(writer.write_due(routes, SHOP_SERVICES)) == 1
    assert patch.most == 3
    assert sorted(patch.written) == ["r0", "r1", "r2", "r3", "r4", "r6"]
    # Only the failed one is due again.
    assert [w.key[1] for w in writer.due(routes, SHOP_SERVICES)] == ["r5"]


def test_by_default_one_write_at_a_time_in_order() -> None:
    patch = SlowPatch()
    names = [f"r{i}" for i in range(4)]
    assert asyncio.run(StatusWriter(patch).write_due(routes_named(*names), SHOP_SERVICES)) == 0
    assert (patch.most, patch.written) == (1, names)


def test_the_writer_behind_the_environment_writes_several_at_a_time() -> None:
    assert statusonly.PARALLEL_WRITES > 1
    with pytest.raises(ValueError):
        StatusWriter(Recorder(), parallel=0)


# --- on scripted list functions -----------------------------------------------------------


def refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("Pods are never listed")


def test_a_route_is_written_accepted_once_both_lists_are_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    routes, services = FakeLister(), FakeLister()
    routes.listings.put(("5", [route(generation=3)]))
    routes.watches.put(([event("ADDED", route("cart", generation=1, uid="uid-2"))], True))
    services.listings.put(("5", [service("stable")]))
    monkeypatch.setattr(client.CustomObjectsApi, "list_cluster_custom_object", routes)
    monkeypatch.setattr(client.CoreV1Api, "list_service_for_all_namespaces", services)
    monkeypatch.setattr(client.CoreV1Api, "list_pod_for_all_namespaces", refuse)
    patch = Recorder()
    monkeypatch.setattr(statusonly, "status_patcher", lambda _: patch)
    ready = tmp_path / "ready"

    async def scenario() -> None:
        task = asyncio.create_task(statusonly.write_statuses(client.ApiClient(), ready))
        await until(lambda: len(patch.calls) == 2, "both routes written")
        assert ready.exists()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sorted(name for _, name, _ in patch.calls) == ["cart", "shop"]
    for _, name, body in patch.calls:
        [entry] = body["status"]["parents"]
        state = {
            kind: (c["status"], c["observedGeneration"]) for kind, c in conditions(entry).items()
        }
        generation = 3 if name == "shop" else 1
        assert state == {"Accepted": ("True", generation), "ResolvedRefs": ("True", generation)}
