"""No request is sent where nothing can answer it: under steady load through the dev gateway
in its realistic mode (route, Service and Pod changes applied seconds after they are
written), every operation that moves traffic or scales pods leaves every request answered
by the application. A gateway 5xx (no ready endpoint, an upstream gone), a refused
connection or a time-out is a request dropped; the application's own 500s, from a version
built to fail, are answers.

Each test holds its load until what the operation scales down is gone (and the gateway has
had its delay to see it), and only then counts.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from rollout_support import (
    BackgroundLoad,
    Shop,
    copies,
    copy_of,
    events,
    get,
    route_host,
    set_version,
    wait_idle,
    wait_replicas,
)

from tidegate.api import ABORT_ANNOTATION
from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.environment import EnvironmentInfo
from tidegate_devenv.loadgen import generate
from tidegate_devenv.operator_process import start_operator
from tidegate_devenv.paths import CANARY_EXAMPLE, REPO
from tidegate_devenv.traffic import Sample
from tidegate_devenv.waiting import wait_until

BLUE_GREEN = REPO / "examples" / "blue-green"
# Requests per second through the gateway during each operation (at least 20).
RATE = 25.0
# How many seconds of responses to count after the last scale-down: the gateway's delay and
# its jitter, for it to see the pods go.
AFTERWARDS = 4.0


def responses_after(load: BackgroundLoad, mark: float) -> None:
    """Wait until the load has had AFTERWARDS seconds' worth of responses after `mark`."""
    wanted = int(RATE * AFTERWARDS)
    wait_until(
        lambda: len(load.samples_between(mark, time.monotonic())),
        f"{wanted} responses after the scale-down", AFTERWARDS * 5,
        until=lambda count: count >= wanted,
    )  # fmt: skip


def unanswered(samples: list[Sample]) -> Counter[tuple[str | None, int]]:
    """The requests the application did not answer: no response at all (code 0), or a 5xx
    from the gateway itself (no version: no application process wrote it)."""
    return Counter((v, code) for _, v, code in samples if code == 0 or (code >= 500 and not v))


def settle_and_count(shop: Shop, started: float, *scaled_away: str) -> list[Sample]:
    """Wait until each named Deployment is at zero or gone, and the gateway's delay after
    that; every response from `started` on."""
    for name in scaled_away:
        wait_idle(shop.kubectl, shop.namespace, name, timeout=120)
    responses_after(shop.load, time.monotonic())
    samples = shop.load.samples_between(started, time.monotonic())
    assert len(samples) >= RATE * 5, f"too few requests to judge: {len(samples)}"
    return samples


@pytest.fixture
def loaded(start_shop: Callable[..., Shop]) -> Callable[..., Shop]:
    """start_shop, with the shop's load at RATE."""

    def start(*args: object, **options: object) -> Shop:
        shop = start_shop(*args, **options)
        shop.load.stop()
        shop.load = BackgroundLoad(shop.environment.gateway_url, shop.host(), rps=RATE)
        wait_until(lambda: shop.load.seen("1.0.0"), "traffic on 1.0.0", 30)
        return shop

    return start


def test_a_canary_promotion_answers_every_request(loaded: Callable[..., Shop]) -> None:
    shop = loaded()
    before = copy_of(shop.status()["stableRevision"])
    started = time.monotonic()
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(lambda s: s.get("canaryWeight") == 60, "the last step", 120)
    # (The last step's pods, as they serve at 60%.)
    at_last_step = pods_of(shop, shop.status()["canaryRevision"])
    shop.wait_phase("Succeeded", 180)
    samples = settle_and_count(shop, started, before)
    assert not unanswered(samples), unanswered(samples)
    assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.1.0"}
    # The pointer flip: the pods that served the last step serve on, as stable, after the
    # stable copy before them went; the promotion made no pod.
    assert pods_of(shop, shop.status()["stableRevision"]) == at_last_step
    assert set(copies(shop.kubectl, shop.namespace)) == {copy_of(shop.status()["stableRevision"])}


def pods_of(shop: Shop, revision: str) -> set[str]:
    """The names of the running pods of the copy of `revision`."""
    found = get(shop.kubectl, shop.namespace, "pods", f"-l=tidegate.io/revision={revision}")
    running = [p for p in found["items"] if not p["metadata"].get("deletionTimestamp")]
    assert running, f"no pod runs revision {revision}"
    return {p["metadata"]["name"] for p in running}


def test_a_rollback_answers_every_request(loaded: Callable[..., Shop]) -> None:
    shop = loaded()
    started = time.monotonic()
    set_version(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
    status = shop.wait_phase("Failed", 180)
    samples = settle_and_count(shop, started, copy_of(status["canaryRevision"]))
    assert not unanswered(samples), unanswered(samples)
    app_errors = sum(1 for _, v, code in samples if v == "1.2.0" and code == 500)
    assert app_errors > 0  # the bad version did answer, with its own errors


def test_an_abort_at_30_percent_answers_every_request(loaded: Callable[..., Shop]) -> None:
    shop = loaded()
    started = time.monotonic()
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("canaryWeight") == 30 and s.get("stepStartedAt") is not None,
        "the canary at 30%",
    )
    shop.kubectl.check(
        "annotate", "-n", shop.namespace, "progressiverollout/shop", f"{ABORT_ANNOTATION}=test"
    )
    status = shop.wait_phase("Aborted", 60)
    samples = settle_and_count(shop, started, copy_of(status["canaryRevision"]))
    assert not unanswered(samples), unanswered(samples)
    assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.0.0"}


def test_a_blue_green_switch_and_scale_down_answer_every_request(
    loaded: Callable[..., Shop],
) -> None:
    # Green is checked after the switch, on live traffic (the load has no preview requests).
    rollout = yaml.safe_load((BLUE_GREEN / "rollout.yaml").read_text())
    del rollout["spec"]["strategy"]["blueGreen"]["prePromotionAnalysis"]
    shop = loaded(yaml.safe_dump(rollout), example=BLUE_GREEN)
    blue = copy_of(shop.status()["stableRevision"])
    started = time.monotonic()
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_phase("Succeeded", 240)
    samples = settle_and_count(shop, started, blue)
    assert not unanswered(samples), unanswered(samples)
    assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.1.0"}


@pytest.fixture
def app_under_load(
    environment: EnvironmentInfo, kubectl: KubectlRunner, namespace: str
) -> Iterator[BackgroundLoad]:
    """The canary example's app alone (no rollout yet), serving through its own Service,
    with load at RATE."""
    app = list(yaml.safe_load_all((CANARY_EXAMPLE / "app.yaml").read_text()))
    for obj in app:
        if obj["kind"] == "HTTPRoute":
            obj["spec"]["hostnames"] = [route_host(namespace, obj["metadata"]["name"])]
    kubectl.check("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(app))
    load = BackgroundLoad(environment.gateway_url, route_host(namespace, "shop"), rps=RATE)
    try:
        wait_until(lambda: load.seen("1.0.0"), "traffic on 1.0.0 through Service shop", 60)
        yield load
    finally:
        load.stop()


def test_adoption_and_hand_back_answer_every_request(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
    app_under_load: BackgroundLoad,
) -> None:
    load = app_under_load
    started = time.monotonic()
    kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        # Adopted: the route on tidegate's copies, then the user's Deployment scaled away.
        wait_until(
            lambda: get(kubectl, namespace, "progressiverollout", "shop").get("status", {}),
            "adopted", 90, until=lambda status: status.get("phase") == "Initialized",
        )  # fmt: skip
        wait_replicas(kubectl, namespace, "shop", 0, timeout=90)
        responses_after(load, time.monotonic())
        adopted = load.samples_between(started, time.monotonic())
        assert len(adopted) >= RATE * 5
        assert not unanswered(adopted), unanswered(adopted)

        # Handed back on delete: the user's Deployment up and ready, the route back on
        # Service shop, then tidegate's copies gone with the rollout.
        handing_back = time.monotonic()
        kubectl.check("delete", "-n", namespace, "progressiverollout/shop", "--wait=false")
        wait_until(
            lambda: kubectl.run("get", "-n", namespace, "progressiverollout/shop").returncode,
            "the rollout gone", 120, until=lambda code: code != 0,
        )  # fmt: skip
        wait_until(
            lambda: copies(kubectl, namespace), "the copies gone with it", 120,
            until=lambda found: not found,
        )  # fmt: skip
        responses_after(load, time.monotonic())
        handed_back = load.samples_between(handing_back, time.monotonic())
        assert len(handed_back) >= RATE * 5
        assert not unanswered(handed_back), unanswered(handed_back)
        assert {v for _, v, _ in handed_back[-int(RATE) :]} == {"1.0.0"}
    finally:
        operator.stop()


def freeze_routes(kubectl: KubectlRunner, namespace: str) -> Callable[[], None]:
    """Refuse every change to the HTTPRoutes of `namespace` (not their status, which the
    gateway writes), as an admission webhook or a policy a platform team adds would; once the
    API server enforces it. Returns what lifts it."""
    return freeze(kubectl, namespace, "gateway.networking.k8s.io", "httproutes", "httproute/shop")


def freeze_services(kubectl: KubectlRunner, namespace: str) -> Callable[[], None]:
    """As freeze_routes, for the Services of `namespace`."""
    return freeze(kubectl, namespace, "", "services", "service/shop-stable")


def freeze(
    kubectl: KubectlRunner, namespace: str, group: str, resource: str, probe: str
) -> Callable[[], None]:
    """Refuse every update of `resource` in `namespace` (a ValidatingAdmissionPolicy), once
    the API server is seen refusing a dry-run change to `probe`. Returns what lifts it."""
    name = f"freeze-{resource}-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": [resource],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": f"{resource} frozen by the test"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    kubectl.check("apply", "-f", "-", stdin=yaml.safe_dump_all([policy, binding]))

    def refused() -> bool:
        attempt = kubectl.run(
            "label", "-n", namespace, probe, "probe=1", "--overwrite", "--dry-run=server"
        )
        return attempt.returncode != 0 and f"{resource} frozen by the test" in attempt.stderr

    wait_until(refused, f"the API server refusing {resource} writes", 30)

    def lift() -> None:
        kubectl.check(
            "delete", f"validatingadmissionpolicybinding/{name}",
            f"validatingadmissionpolicy/{name}",
        )  # fmt: skip
        wait_until(lambda: not refused(), f"{resource} writes allowed again", 30)

    return lift


def test_a_refused_route_write_never_leaves_weight_on_a_canary_with_no_pods(
    loaded: Callable[..., Shop],
) -> None:
    shop = loaded()
    kubectl, namespace = shop.kubectl, shop.namespace
    set_version(kubectl, namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("canaryWeight") == 30 and s.get("stepStartedAt") is not None,
        "the canary at 30%",
    )
    canary = copy_of(shop.status()["canaryRevision"])
    lift = freeze_routes(kubectl, namespace)
    started = time.monotonic()
    seen: list[tuple[int, int]] = []  # (canary weight in the route, canary replicas)

    def look() -> tuple[int, int]:
        route = get(kubectl, namespace, "httproute", "shop")
        weights = {r["name"]: r.get("weight", 1) for r in route["spec"]["rules"][0]["backendRefs"]}
        replicas = get(kubectl, namespace, "deployment", canary)["spec"]["replicas"]
        seen.append((weights.get("shop-canary", 0), replicas))
        return seen[-1]

    try:
        kubectl.check(
            "annotate", "-n", namespace, "progressiverollout/shop", f"{ABORT_ANNOTATION}=test"
        )
        shop.wait_phase("Aborted", 60)
        # 20 s of refused route writes: the traffic stays where it was, and so do the pods.
        wait_until(
            look, "20 s of refused route writes", 60,
            until=lambda _: time.monotonic() - started >= 20,
        )  # fmt: skip
        degraded = [c for c in shop.status()["conditions"] if c["type"] == "Degraded"]
        assert degraded and degraded[0]["status"] == "True"
    finally:
        lift()
    wait_until(look, "the route back on stable and the canary scaled away", 120,
               until=lambda state: state == (0, 0))  # fmt: skip
    assert all(replicas > 0 for weight, replicas in seen if weight > 0), seen
    assert any(weight == 30 for weight, _ in seen), seen  # the frozen route was looked at
    samples = shop.load.samples_between(started, time.monotonic())
    assert not unanswered(samples), unanswered(samples)


def test_callers_inside_the_cluster_reach_only_stable_while_a_canary_is_analysed(
    loaded: Callable[..., Shop],
) -> None:
    shop = loaded()
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("canaryWeight") == 30 and s.get("stepStartedAt") is not None,
        "the canary at 30%",
    )
    shop.caught_up()  # the gateway has applied the Service selector and the weights
    # Through the route: the split. To the user's Service by its cluster name (as a pod in
    # the cluster calls it, around the route): the stable version alone.
    routed = shop.load.samples_between(time.monotonic() - 3, time.monotonic())
    assert any(v == "1.1.0" for _, v, _ in routed), Counter(v for _, v, _ in routed)
    inside = asyncio.run(
        generate(
            shop.environment.gateway_url,
            host=f"shop.{shop.namespace}.svc",
            count=100,
            concurrency=4,
        )
    )
    seen = Counter((version, code) for _, version, code in inside.samples)
    assert seen == Counter({("1.0.0", 200): 100}), seen
    selector = get(shop.kubectl, shop.namespace, "service", "shop")["spec"]["selector"]
    assert selector["tidegate.io/revision"] == shop.status()["stableRevision"]


def test_a_target_deleted_mid_rollout_leaves_traffic_on_stable(
    loaded: Callable[..., Shop],
) -> None:
    shop = loaded()
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("canaryWeight") == 30 and s.get("stepStartedAt") is not None,
        "the canary at 30%",
    )
    started = time.monotonic()
    shop.kubectl.check("delete", "-n", shop.namespace, "deployment/shop")
    status = shop.wait_phase("Failed", 60)
    assert status["canaryWeight"] == 0
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "TargetNotFound"), degraded
    assert "does not exist" in degraded["message"]
    rolled_back = [e for e in events(shop.kubectl, shop.namespace) if e["reason"] == "RolledBack"]
    assert rolled_back and "deleted mid-rollout" in rolled_back[0]["message"], rolled_back
    samples = settle_and_count(shop, started, copy_of(status["canaryRevision"]))
    assert not unanswered(samples), unanswered(samples)
    assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.0.0"}
    stable = shop.copy("stable")
    assert stable["status"].get("readyReplicas") == stable["spec"]["replicas"] > 0


def test_a_promotion_that_cannot_finish_is_rolled_back_at_the_deadline(
    loaded: Callable[..., Shop],
) -> None:
    # The last step waits for a promote, so that the policy below is in force before the
    # promotion starts.
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["progressDeadlineSeconds"] = 30
    rollout["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 30}, {"pause": {}}]
    shop = loaded(yaml.safe_dump(rollout))
    kubectl, namespace = shop.kubectl, shop.namespace
    stable_before = shop.status()["stableRevision"]
    set_version(kubectl, namespace, "1.1.0")
    status = shop.wait_status(lambda s: s.get("phase") == "Paused", "the pause after 30%", 120)
    canary = copy_of(status["canaryRevision"])
    # No Service of the namespace can be changed: the promotion's flip of shop-stable to
    # the analysed copy is refused by the API server, for as long as it tries.
    lift = freeze_services(kubectl, namespace)
    try:
        started = time.monotonic()
        shop.promote()
        shop.wait_phase("Promoting", 30)
        status = shop.wait_phase("Failed", 90)
        took = time.monotonic() - started
        assert took >= 30, f"rolled back after {took:.0f}s, before the 30 s deadline"
        assert (status["stableRevision"], status["canaryWeight"]) == (stable_before, 0)
        # (Told once the decision's writes are done: a moment after the status shows it.)
        told = wait_until(
            lambda: {e["reason"]: e["message"] for e in events(kubectl, namespace)},
            "the rollback told", 30, until=lambda told: "RolledBack" in told,
        )  # fmt: skip
        assert "was not promoted within 30s" in told["RolledBack"], told
        assert "Promoted" not in told
        samples = settle_and_count(shop, started, canary)
    finally:
        lift()
    assert not unanswered(samples), unanswered(samples)
    assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.0.0"}
    selector = get(kubectl, namespace, "service", "shop-stable")["spec"]["selector"]
    assert selector["tidegate.io/revision"] == stable_before


# The last commit whose operator ran two copies named by role (`shop-stable`, `shop-canary`)
# and promoted by rolling the canary's template into `shop-stable`: run from the
# repository's history, as the release a cluster is upgraded from.
LAYOUT_BY_ROLE = "01319326e3bea28fcdf9cc1527d801ec065473ee"


def operator_of(commit: str, where: Path) -> Path:
    """The operator package as it was at `commit`, extracted under `where`: a PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "operator"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where / "operator"


def test_a_rollout_under_way_when_tidegate_is_upgraded_finishes_and_so_does_the_next(
    environment: EnvironmentInfo,
    kubectl: KubectlRunner,
    namespace: str,
    rollout_crd: None,
    tmp_path: Path,
    app_under_load: BackgroundLoad,
) -> None:
    load = app_under_load
    started = time.monotonic()
    kubectl.check("apply", "-n", namespace, "-f", str(CANARY_EXAMPLE / "rollout.yaml"))
    old = operator_of(LAYOUT_BY_ROLE, tmp_path / "old")
    operator = start_operator(
        environment, tmp_path / "operator-before.log", namespaces=[namespace],
        env={"PYTHONPATH": str(old)},
    )  # fmt: skip
    try:
        status = wait_until(
            lambda: get(kubectl, namespace, "progressiverollout", "shop").get("status", {}),
            "adopted by the operator before", 90,
            until=lambda status: status.get("phase") == "Initialized",
        )  # fmt: skip
        # The layout before: copies named by role.
        assert set(copies(kubectl, namespace)) >= {"shop-stable"}
        set_version(kubectl, namespace, "1.1.0")
        status = wait_until(
            lambda: get(kubectl, namespace, "progressiverollout", "shop").get("status", {}),
            "the canary at 30%", 120,
            until=lambda s: s.get("canaryWeight") == 30 and s.get("stepStartedAt") is not None,
        )  # fmt: skip
        assert set(copies(kubectl, namespace)) == {"shop-stable", "shop-canary"}
    finally:
        operator.stop()

    # Upgraded mid-rollout: the operator of now finishes it on the copies it finds.
    operator = start_operator(environment, tmp_path / "operator.log", namespaces=[namespace])
    try:
        promoted = wait_until(
            lambda: get(kubectl, namespace, "progressiverollout", "shop").get("status", {}),
            "promoted by the operator of now", 180,
            until=lambda s: s.get("phase") == "Succeeded",
        )["stableRevision"]  # fmt: skip
        # The canary's copy took the stable role as it was, pods and all: the stable Service
        # selects it by its role label, and the stable copy before it goes.
        selector = get(kubectl, namespace, "service", "shop-stable")["spec"]["selector"]
        assert selector.get("tidegate.io/role") == "canary", selector
        wait_until(
            lambda: set(copies(kubectl, namespace)), "the stable copy before removed", 120,
            until=lambda names: names == {"shop-canary"},
        )  # fmt: skip
        # The next revision gets a copy of its own; the last copy named by role goes.
        set_version(kubectl, namespace, "1.2.0")
        status = wait_until(
            lambda: get(kubectl, namespace, "progressiverollout", "shop").get("status", {}),
            "the next revision promoted", 180,
            until=lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != promoted,
        )  # fmt: skip
        revision = status["stableRevision"]
        wait_until(
            lambda: set(copies(kubectl, namespace)), "only the new copy left", 120,
            until=lambda names: names == {copy_of(revision)},
        )  # fmt: skip
        responses_after(load, time.monotonic())
        samples = load.samples_between(started, time.monotonic())
        assert not unanswered(samples), unanswered(samples)
        assert {v for _, v, _ in samples[-int(RATE) :]} == {"1.2.0"}
    finally:
        operator.stop()
