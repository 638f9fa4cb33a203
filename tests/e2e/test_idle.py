"""Idle rollouts cost the API server nothing: measured in its audit log, not assumed.

Twenty applications, each with its ProgressiveRollout, are initialised by one operator and
then left alone for longer than any period the operator resyncs on: each rollout is
reconciled again (its idle resync, IDLE_RESYNC_SECONDS) and the operator's own counter says
so. Meanwhile the operator may keep its watches open (that is how it stays current), but it
must neither read (get, list) nor write: the reconciles read the watch-fed cache. Then one
application changes, and the operator must take its rollout on at once: an operator that is
quiet because it stopped working would pass the first half alone.

The operator's requests are told from everyone else's (kubectl's, the dev environment's
own clients', with the same admin credentials) by their User-Agent: `tidegate/<version>`
for the official client's reads and writes, `tidegate/<version> kopf/<version>` for kopf's
lists and watches.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollout_support import get, unique_host

from tidegate.handlers import IDLE_RESYNC_SECONDS
from tidegate_devenv import audit
from tidegate_devenv.audit import AuditedRequest
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.operator_process import OperatorProcess, read_status, start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.waiting import wait_until

# Its own cluster: the API server's audit log must hold this operator's requests alone
# (every operator's User-Agent starts tidegate/).
pytestmark = pytest.mark.own_environment

ROLLOUTS = 20
AGENT = "tidegate/"  # both of the operator's User-Agents start so
KOPF_AGENT = " kopf/"  # ... and kopf's goes on so
CHANGED = "shop-7"  # the application changed after the idle window


def app_name(i: int) -> str:
    return f"shop-{i}"


def belongs_to(app: str, name: str) -> bool:
    """Whether `name` is one of what the app and its rollout are made of: its Deployment,
    Service, HTTPRoute and rollout (`shop-3`), the operator's Services (`shop-3-stable`,
    `shop-3-canary`) and its copies, one per revision (`shop-3-<revision>`)."""
    return re.fullmatch(rf"{re.escape(app)}(-stable|-canary|-[0-9a-f]{{10}})?", name) is not None


def manifests(namespace: str) -> str:
    """examples/canary's app, ROLLOUTS times under names of their own (Deployment, Service,
    HTTPRoute on a hostname of its own), one replica each; and a rollout for each that,
    once a change comes, sets a weight and then holds (no metrics: no Prometheus traffic)."""
    template = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    rollout_template = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    objects: list[dict[str, Any]] = []
    for i in range(ROLLOUTS):
        name = app_name(i)
        for source in template:
            obj = yaml.safe_load(yaml.safe_dump(source))  # a deep copy
            obj["metadata"]["name"] = name
            if obj["kind"] == "Deployment":
                obj["metadata"]["labels"] = {"app": name}
                obj["spec"]["replicas"] = 1
                obj["spec"]["selector"]["matchLabels"] = {"app": name}
                obj["spec"]["template"]["metadata"]["labels"] = {"app": name}
            elif obj["kind"] == "Service":
                obj["spec"]["selector"] = {"app": name}
            elif obj["kind"] == "HTTPRoute":
                obj["spec"]["hostnames"] = [f"{name}.{unique_host(namespace)}"]
                obj["spec"]["rules"][0]["backendRefs"][0]["name"] = name
            objects.append(obj)
        rollout = yaml.safe_load(yaml.safe_dump(rollout_template))
        rollout["metadata"]["name"] = name
        spec = rollout["spec"]
        spec["targetRef"]["name"] = name
        spec["service"]["name"] = name
        spec["trafficRouting"]["gatewayAPI"]["httpRoute"] = name
        spec["strategy"]["canary"]["steps"] = [{"setWeight": 10}, {"pause": {}}]
        spec["analysis"] = {"interval": "2s"}
        objects.append(rollout)
    return yaml.safe_dump_all(objects)


def phases(kubectl: KubectlRunner, namespace: str) -> dict[str, str | None]:
    """Every rollout's status.phase, by name."""
    items = get(kubectl, namespace, "progressiverollouts")["items"]
    return {r["metadata"]["name"]: (r.get("status") or {}).get("phase") for r in items}


def settled(kubectl: KubectlRunner, namespace: str) -> list[str]:
    """What is still moving: Deployments whose controller has not caught up with their spec
    (a scale the operator asked for, pods not yet ready), and users' Deployments not yet
    scaled to zero (a scale-down delay after the route is applied). Empty when nothing is."""
    moving = []
    for deployment in get(kubectl, namespace, "deployments")["items"]:
        spec, status = deployment["spec"], deployment.get("status") or {}
        ours = "tidegate.io/rollout" in (deployment["metadata"].get("labels") or {})
        if not ours and spec["replicas"] != 0:
            moving.append(deployment["metadata"]["name"])
            continue
        caught_up = status.get("observedGeneration") == deployment["metadata"]["generation"]
        ready = (status.get("readyReplicas") or 0) == spec["replicas"]
        gone = (status.get("replicas") or 0) == spec["replicas"]  # no old pods left
        if not (caught_up and ready and gone):
            moving.append(deployment["metadata"]["name"])
    return moving


def describe(requests: list[AuditedRequest]) -> str:
    return "\n".join(f"  {r} [{r.user_agent}] -> {r.code}" for r in requests) or "  (none)"


@dataclass
class Log:
    """The environment's audit log, read again on each call."""

    path: Path

    def events(self) -> list[dict[str, Any]]:
        return audit.read_events(self.path)

    def mark(self) -> frozenset[str]:
        return audit.audit_ids(self.events())

    def operator_requests(self, mark: frozenset[str] = frozenset()) -> list[AuditedRequest]:
        """The operator's requests logged since `mark` (all of them without one)."""
        return audit.requests_with_agent(AGENT, audit.since(mark, self.events()))


@pytest.fixture
def audit_log(environment: EnvironmentInfo) -> Log:
    if os.environ.get("TIDEGATE_TEST_KUBECONFIG"):
        pytest.skip(
            "TIDEGATE_TEST_KUBECONFIG names an external cluster: its API server's audit log "
            "(if it keeps one) is not readable here, and the requests are what is measured"
        )
    return Log(audit.audit_log(Path(environment.state_dir)))


@pytest.fixture
def operator(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """ROLLOUTS applications and rollouts in the namespace, with one operator for it, until
    every rollout is Initialized and every Deployment has settled."""
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=manifests(namespace))
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        wait_until(
            lambda: phases(kubectl, namespace),
            f"all {ROLLOUTS} rollouts Initialized",
            120,
            until=lambda seen: (
                len(seen) == ROLLOUTS and all(phase == "Initialized" for phase in seen.values())
            ),
            interval=1,
            log=operator.log,
        )
        # Initialized is not the end of it: the user's Deployment is then scaled down, and
        # the operator is woken by each step of that. Idle is when nothing moves any more.
        wait_until(
            lambda: settled(kubectl, namespace),
            "every Deployment settled",
            60,
            until=lambda moving: not moving,
            interval=1,
        )
        yield operator
    finally:
        operator.stop()


def test_idle_rollouts_make_no_api_request_and_a_change_is_still_handled_at_once(
    kubectl: KubectlRunner,
    namespace: str,
    audit_log: Log,
    operator: OperatorProcess,
    record_property: Callable[[str, object], None],
) -> None:
    # The log does see the operator, under both its User-Agents: a filter that matched
    # nothing would make the idle check below pass for any operator.
    agents = {r.user_agent for r in audit_log.operator_requests()}
    print(f"\nthe operator's User-Agents: {sorted(agents)}")
    assert any(KOPF_AGENT in a for a in agents), f"no request from kopf seen: {agents}"
    assert any(KOPF_AGENT not in a for a in agents), f"none from tidegate's client: {agents}"

    # --- idle ---
    mark, marked_at = audit_log.mark(), time.monotonic()
    before, errors_before = operator.reconciles(), operator.reconciles("error")
    # Over when every rollout has been resynced at least once (the reconcile counter says
    # so) and a whole resync period has gone by: no rollout's timer is left out.
    reconciles, idle_for = wait_until(
        lambda: (operator.reconciles(), time.monotonic() - marked_at),
        f"{ROLLOUTS} idle resyncs over {IDLE_RESYNC_SECONDS:.0f} s",
        IDLE_RESYNC_SECONDS + 60,
        until=lambda seen: seen[0] >= before + ROLLOUTS and seen[1] > IDLE_RESYNC_SECONDS,
        interval=1,
        log=operator.log,
    )
    # The leader election renews its Lease (a get and an update every few seconds): the
    # operator's own heartbeat, the same for one rollout or ten thousand. Counted apart.
    requests = audit_log.operator_requests(mark)
    lease = [r for r in requests if r.call is not None and r.call.resource == "leases"]
    idle = [r for r in requests if r not in lease]
    print(f"leader election while idle: {dict(audit.count_by_verb(lease))} on its Lease")
    record_property("idle_lease_requests_by_verb", dict(audit.count_by_verb(lease)))
    assert {r.call.group for r in lease if r.call} <= {"coordination.k8s.io"}
    by_verb, by_call = audit.count_by_verb(idle), audit.count_by_call(idle)
    print(
        f"idle for {idle_for:.0f} s, {reconciles - before} reconciles of {ROLLOUTS} rollouts; "
        f"the operator's requests: {dict(by_verb) or 'none'}"
    )
    for call, count in sorted(by_call.items()):
        print(f"  {count:4d} {call}")
    record_property("idle_seconds", round(idle_for))
    record_property("idle_reconciles", reconciles - before)
    record_property("idle_requests_by_verb", dict(by_verb))
    record_property("idle_requests_by_call", dict(by_call))
    assert operator.reconciles("error") == errors_before
    reads = [r for r in idle if r.verb in audit.READ_VERBS]
    assert not reads, f"idle, the operator read from the API server:\n{describe(reads)}"
    writes = [r for r in idle if r.verb in audit.WRITE_VERBS]
    assert not writes, f"idle, the operator wrote:\n{describe(writes)}"
    # Anything else is a watch (kopf's, re-established or not): how it stays current.
    assert set(by_verb) <= {"watch"}, by_verb

    # --- and then a change ---
    mark = audit_log.mark()
    kubectl.check("set", "env", "-n", namespace, f"deployment/{CHANGED}", "VERSION=1.1.0")
    status = wait_until(
        lambda: read_status(kubectl, namespace, CHANGED),
        f"{CHANGED} to leave Initialized",
        30,
        until=lambda s: s.get("phase") not in (None, "Initialized"),
        log=operator.log,
    )
    assert status["phase"] in {"Progressing", "Paused"}, status

    def writes_for_the_change() -> set[str]:
        return {
            f"{r.verb} {r.call.rbac_resource if r.call else r.uri} {r.name}"
            for r in audit_log.operator_requests(mark)
            if r.verb in audit.WRITE_VERBS and r.name and belongs_to(CHANGED, r.name)
        }

    # The status the test saw, the canary's copy (an apply is a patch) and its first
    # weight in the route. An audit event is on disk before its response is sent, but these
    # writes need not all be done by the time the status shows: a short wait for the rest.
    wanted = {
        f"patch progressiverollouts/status {CHANGED}",
        f"patch deployments {CHANGED}-{status['canaryRevision']}",
        f"patch httproutes {CHANGED}",
    }
    written = wait_until(
        writes_for_the_change,
        f"the operator's writes for {CHANGED}",
        10,
        until=lambda seen: wanted <= seen,
        interval=0.5,  # each look reads the whole audit log
    )
    print(f"the operator's writes after the change: {sorted(written)}")
    # Those writes were for the changed application alone: the other rollouts stayed idle.
    # (An Event's create names no object in the log; it is left out.)
    apps = {app_name(i) for i in range(ROLLOUTS)} - {CHANGED}
    others = [
        r
        for r in audit_log.operator_requests(mark)
        if r.verb in audit.WRITE_VERBS and r.name and any(belongs_to(a, r.name) for a in apps)
    ]
    assert not others, f"writes for rollouts that did not change:\n{describe(others)}"
