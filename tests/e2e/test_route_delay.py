"""The dev gateway's realistic mode, on the session's environment (route delay D from
$TIDEGATE_ROUTE_DELAY, 1 s unless set): a route change goes live about D after it is
written, and only then does the route's status report the new generation applied."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from objects import deployment, http_route, service

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.delayed import max_jitter
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.routestatus import CONTROLLER_NAME, DEFAULT_PARENT
from tidegate_devenv.waiting import wait_until

# How much later than its delay and jitter a change may show on a loaded machine: the watch
# event's way to the gateway, a request's or a status read's round trip.
SLACK = 3.0
# A request sent just before the change was applied may be answered by the new backend.
IN_FLIGHT = 0.1
STATUS_POLL = 0.05
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")

Obj = dict[str, Any]


def apply(kubectl: KubectlRunner, namespace: str, *objects: object) -> None:
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))


@pytest.fixture
def custom(environment: EnvironmentInfo) -> Iterator[client.CustomObjectsApi]:
    """Reads HTTPRoutes in a few ms, where kubectl takes a process start."""
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=environment.kubeconfig
    )
    try:
        yield client.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def read_route(custom: client.CustomObjectsApi, namespace: str, name: str) -> Obj:
    group, version, plural = ROUTES
    route = custom.get_namespaced_custom_object(
        group, version, namespace, plural, name, _request_timeout=5
    )
    assert isinstance(route, dict)
    return route


def our_parents(route: Obj) -> list[Obj]:
    parents = (route.get("status") or {}).get("parents") or []
    return [p for p in parents if p.get("controllerName") == CONTROLLER_NAME]


def conditions(route: Obj) -> dict[str, Obj]:
    """The conditions of the dev gateway's (only) status.parents entry, by type."""
    [entry] = our_parents(route)
    return {c["type"]: c for c in entry["conditions"]}


def accepted_generation(route: Obj) -> int | None:
    """The generation the dev gateway reports applied (Accepted=True), if any."""
    if not our_parents(route):
        return None
    accepted = conditions(route).get("Accepted") or {}
    return int(accepted["observedGeneration"]) if accepted.get("status") == "True" else None


def current(route: Obj) -> bool:
    return bool(accepted_generation(route) == route["metadata"]["generation"])


def get(gateway_url: str, host: str) -> tuple[int, Obj]:
    request = urllib.request.Request(f"{gateway_url}/", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def version_served(gateway_url: str, host: str) -> str | None:
    status, body = get(gateway_url, host)
    return str(body["version"]) if status == 200 else None


@dataclass
class Switch:
    """What was seen while the route changed; times are time.monotonic()."""

    last_old: float | None = None  # sending time of the last request the old version served
    first_new: float | None = None  # ... and of the first the new one served
    flipped_back: bool = False  # the old version served again after the new one had
    status_at: float | None = None  # when the status first reported the new generation
    others: int = 0  # answers from neither version


def watch_switch(
    url: str, host: str, read: Any, generation: int, old: str, new: str, deadline: float
) -> Switch:
    """Requests back to back, and the route's status every STATUS_POLL s, until both the
    new version and the new generation's status are seen (or the deadline)."""
    seen = Switch()
    next_read = 0.0
    while time.monotonic() < deadline:
        sent = time.monotonic()
        version = version_served(url, host)
        if version == old:
            seen.last_old = sent
            seen.flipped_back |= seen.first_new is not None
        elif version == new:
            seen.first_new = seen.first_new or sent
        else:
            seen.others += 1
        if seen.status_at is None and time.monotonic() >= next_read:
            if accepted_generation(read()) == generation:
                seen.status_at = time.monotonic()
            next_read = time.monotonic() + STATUS_POLL
        if seen.first_new is not None and seen.status_at is not None:
            return seen
    return seen


def test_a_weight_change_goes_live_after_the_route_delay(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    custom: client.CustomObjectsApi,
) -> None:
    delay = environment.route_delay
    if not delay:
        pytest.skip("the environment's gateway applies changes at once (TIDEGATE_ROUTE_DELAY=0)")
    host = f"delay.{namespace}.test"
    apply(
        kubectl,
        namespace,
        deployment("one", version="v1"),
        deployment("two", version="v2"),
        service("one", "one"),
        service("two", "two"),
        http_route("delay", host, [("one", 100), ("two", 0)]),
    )
    for name in ("one", "two"):
        kubectl.check("rollout", "status", "-n", namespace, f"deployment/{name}", "--timeout=60s")
    url = environment.gateway_url
    wait_until(
        lambda: version_served(url, host), "the route to serve v1", 60, until=lambda v: v == "v1"
    )
    # v2's app running before the switch, so that the switch is not an app start as well.
    two = f"two.{namespace}.svc"
    wait_until(lambda: version_served(url, two), "v2's demo app", 60, until=lambda v: v == "v2")

    def read() -> Obj:
        return read_route(custom, namespace, "delay")

    before = wait_until(read, "the route's status for its generation", 30, until=current)
    generation = before["metadata"]["generation"] + 1

    # Written with a client of our own, not kubectl: its process start would blur when the
    # write happened.
    rules = http_route("delay", host, [("one", 0), ("two", 100)])["spec"]["rules"]
    began, began_wall = time.monotonic(), time.time()
    group, version, plural = ROUTES
    custom.patch_namespaced_custom_object(
        group, version, namespace, plural, "delay", {"spec": {"rules": rules}}, _request_timeout=5
    )
    written = time.monotonic()
    latest = written + delay + max_jitter(delay) + SLACK
    seen = watch_switch(url, host, read, generation, "v1", "v2", latest + 1)
    timeline = f"{seen} began={began:.3f} written={written:.3f} delay={delay}"

    # (a) The old backend kept the requests for about the delay, then the new one took them
    # all, at once and for good.
    assert seen.first_new is not None, f"v2 never served: {timeline}"
    assert seen.last_old is not None and seen.last_old - began >= 0.75 * delay, timeline
    assert seen.first_new - began >= delay - IN_FLIGHT, timeline
    assert seen.first_new <= latest, timeline
    assert not seen.flipped_back and seen.others == 0, timeline
    # (b) The status reports the new generation only once it is applied.
    assert seen.status_at is not None, f"no status for generation {generation}: {timeline}"
    assert seen.status_at - began >= delay, timeline
    assert seen.status_at <= latest, timeline
    after = conditions(read())
    for kind in ("Accepted", "ResolvedRefs"):
        assert after[kind]["status"] == "True"
        assert after[kind]["observedGeneration"] == generation
    [entry] = our_parents(read())
    assert entry["parentRef"] == DEFAULT_PARENT

    # The gateway's plan history has the change at the moment it was applied.
    with urllib.request.urlopen(
        f"{environment.gateway_metrics_url}/plans?namespace={namespace}", timeout=5
    ) as response:
        plans = [p for p in json.loads(response.read()) if p["route"] == "delay"]
    assert plans[-1]["shares"] == {"v2": 1.0}
    assert plans[-1]["at"] - began_wall >= delay


def test_status_reports_backends_resolved_once_they_exist(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    custom: client.CustomObjectsApi,
) -> None:
    host = f"refs.{namespace}.test"
    route = http_route("refs", host, [("later", 1)])
    route["spec"]["parentRefs"] = [{"name": "public"}]
    apply(kubectl, namespace, route)

    def read() -> Obj:
        return read_route(custom, namespace, "refs")

    timeout = 30 + environment.route_delay
    written = wait_until(read, "the route's status", timeout, until=current)
    [entry] = our_parents(written)
    # The parentRef as the route names it (the API server fills in group and kind).
    assert entry["parentRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "public",
    }
    refs = conditions(written)["ResolvedRefs"]
    assert (refs["status"], refs["reason"]) == ("False", "BackendNotFound")
    assert f"{namespace}/later" in refs["message"]
    assert conditions(written)["Accepted"]["status"] == "True"
    assert get(environment.gateway_url, host)[0] == 500  # the Service does not exist

    apply(kubectl, namespace, service("later", "nobody"))  # selects no pod
    resolved = wait_until(
        read,
        "ResolvedRefs True once the Service exists",
        timeout,
        until=lambda r: conditions(r)["ResolvedRefs"]["status"] == "True",
    )
    assert conditions(resolved)["ResolvedRefs"]["observedGeneration"] == 1
    # The Service is in the gateway's snapshot now, with no ready endpoint: 503 (not held
    # for a pod to come, which `get`'s timeout would turn into an error).
    assert get(environment.gateway_url, host)[0] == 503

    # Its own status write comes back to the gateway as a change; it must not write again.
    # (An absence, so it takes a window: the delay and a retry period.)
    version = resolved["metadata"]["resourceVersion"]
    quiet_until = time.monotonic() + environment.route_delay + 2.5
    while time.monotonic() < quiet_until:
        assert read()["metadata"]["resourceVersion"] == version
        time.sleep(0.2)
