"""spec.waves on three local control planes (regions a, b and c), each with its own tidegate,
its own copy of the shop and its own load, reading each other's rollouts through the reader
kubeconfigs deploy/waves mints: a release walks a → b → c, a bad one never leaves a, an
unreachable region holds the next one, revertOnLaterFailure takes a release back in a
when b rejects it, and an undo in a is followed by b (revertOnUpstreamRollback)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rollout_support import (
    ACCOUNT_NAMESPACE,
    RouteWatch,
    Shop,
    events,
    install_operator_rbac,
    running_shop,
    scratch_namespace,
    service_account_kubeconfig,
    undo,
)

from tidegate_devenv.cluster import KubectlRunner
from tidegate_devenv.operator_process import kubectl_for
from tidegate_devenv.paths import REPO
from tidegate_devenv.readers import write_reader_secrets
from tidegate_devenv.regional import (
    RELEASE_ANNOTATION,
    chain,
    regional_app,
    regional_rollout,
    release_patch,
    wave_region,
)
from tidegate_devenv.regions import RegionsInfo, start_apiserver, stop_apiserver
from tidegate_devenv.waiting import wait_until

SOAK = 12  # seconds
WAVES_OPERATOR_RBAC = REPO / "deploy" / "waves" / "operator"
RELEASE_KEY = RELEASE_ANNOTATION


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _example(tmp_path: Path, rollout: str, release: str | None) -> Path:
    """The canary example with this rollout, its pod template annotated with `release`."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "app.yaml").write_text(regional_app(release))
    (tmp_path / "rollout.yaml").write_text(rollout)
    return tmp_path


def _release(
    kubectl: KubectlRunner,
    namespace: str,
    version: str,
    error_rate: float = 0.0,
    release: str | None = None,
) -> None:
    """One change of the pod template, as a GitOps sync makes it (one write)."""
    patch = release_patch(version, error_rate, release)
    kubectl.check("patch", "-n", namespace, "deployment/shop", "-p", patch)


@contextlib.contextmanager
def _shared_namespace(regions: RegionsInfo) -> Iterator[str]:
    """The same namespace name in every region (as one Git repository would give), with the
    reader Secrets and RBAC in it."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        for region in regions.regions:
            stack.enter_context(scratch_namespace(kubectl_for(region), name=name))
        write_reader_secrets(regions, name)
        yield name


@contextlib.contextmanager
def _shops(
    regions: RegionsInfo,
    tmp_path: Path,
    waves: Callable[[str, str], dict[str, Any]],
    release: str | None = None,
    as_account: frozenset[str] = frozenset(),
    spec: dict[str, Any] | None = None,
) -> Iterator[dict[str, Shop]]:
    """The shop, its rollout (spec.waves from `waves(cluster, namespace)`, and `spec`'s
    fields set over the example's), an operator and load in each region, all initialised.
    In the regions of `as_account` the operator runs as its ServiceAccount, with
    deploy/kustomize's rules and deploy/waves/operator's only."""
    with _shared_namespace(regions) as namespace, contextlib.ExitStack() as stack:
        shops: dict[str, Shop] = {}
        for region in regions.regions:
            name = region.cluster
            account: dict[str, Any] = {}
            if name in as_account:
                kubectl = kubectl_for(region)
                install_operator_rbac(kubectl)
                kubectl.check("apply", "-n", namespace, "-k", str(WAVES_OPERATOR_RBAC))
                account = {
                    "operator_kubeconfig": service_account_kubeconfig(
                        kubectl, tmp_path / f"{name}-account.kubeconfig"
                    ),
                    "lease_namespace": ACCOUNT_NAMESPACE,
                }
            rollout = regional_rollout(
                name, waves(name, namespace), by_annotation=release is not None
            )
            if spec:
                edited = yaml.safe_load(rollout)
                edited["spec"].update(spec)
                rollout = yaml.safe_dump(edited)
            example = _example(tmp_path / name, rollout, release)
            shops[name] = stack.enter_context(
                running_shop(
                    region,
                    kubectl_for(region),
                    namespace,
                    tmp_path / name,
                    example=example,
                    **account,
                )
            )
        yield shops


def _wave_condition(status: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in status.get("conditions", []) if c["type"] == "Wave"]
    return found[0] if found else {}


def _walk(cluster: str, namespace: str) -> dict[str, Any]:
    return chain(["a", "b", "c"], namespace, SOAK)[cluster]


def test_a_release_walks_region_by_region(regions: RegionsInfo, tmp_path: Path) -> None:
    with _shops(regions, tmp_path, _walk) as shops:
        watches = {n: RouteWatch(s.kubectl, s.namespace, "shop") for n, s in shops.items()}
        try:
            for shop in shops.values():  # all at once, as a GitOps sync would
                _release(shop.kubectl, shop.namespace, "1.1.0")
            for cluster, upstream in (("b", "a"), ("c", "b")):
                waiting = shops[cluster].wait_status(
                    lambda s: s.get("phase") == "WaitingForWave",
                    f"{cluster} waiting for {upstream}",
                )
                wave = _wave_condition(waiting)
                assert wave["status"] == "False"
                assert f"region {upstream}" in wave["message"]
            for cluster, upstream in (("b", "a"), ("c", "b")):
                done = shops[upstream].wait_phase("Succeeded", 180)
                soaked = _time(done["stableSince"]) + timedelta(seconds=SOAK)
                started = shops[cluster].wait_status(
                    lambda s: s.get("phase") in ("Progressing", "Promoting", "Succeeded"),
                    f"{cluster} started",
                    180,
                )
                assert _time(started["rolloutStartedAt"]) >= soaked
                route = watches[cluster]
                wait_until(lambda r=route: r.first_seen(10) is not None, f"{cluster} at 10%", 60)
                seen = route.first_seen(10)
                assert seen is not None  # as time.monotonic(); on the wall clock:
                assert time.time() - (time.monotonic() - seen) >= soaked.timestamp()
            shops["c"].wait_phase("Succeeded", 180)
        finally:
            for watch in watches.values():
                watch.stop()


def test_a_bad_release_never_leaves_the_first_region(regions: RegionsInfo, tmp_path: Path) -> None:
    with _shops(regions, tmp_path, _walk) as shops:
        watches = {n: RouteWatch(s.kubectl, s.namespace, "shop") for n, s in shops.items()}
        try:
            for shop in shops.values():
                _release(shop.kubectl, shop.namespace, "1.2.0", error_rate=0.5)
            shops["a"].wait_phase("Failed", 120)
            for cluster, upstream in (("b", "a"), ("c", "b")):
                failed = shops[cluster].wait_phase("Failed", 120)
                degraded = next(c for c in failed["conditions"] if c["type"] == "Degraded")
                assert degraded["reason"] == "RejectedUpstream"
                assert f"Region {upstream}" in failed["message"]
            for cluster in ("b", "c"):
                assert max(watches[cluster].weights(), default=0) == 0
                assert not shops[cluster].load.seen("1.2.0")
        finally:
            for watch in watches.values():
                watch.stop()


def test_an_unreachable_region_holds_the_next_until_it_is_back(
    regions: RegionsInfo, tmp_path: Path
) -> None:
    def waves(cluster: str, namespace: str) -> dict[str, Any]:
        return {"after": [wave_region("a", namespace, 0)]} if cluster == "b" else {}

    with _shops(regions, tmp_path, waves) as shops:
        a, b = shops["a"], shops["b"]
        _release(a.kubectl, a.namespace, "1.1.0")
        a.wait_phase("Succeeded", 120)
        stop_apiserver(regions.region("a"))
        try:
            _release(b.kubectl, b.namespace, "1.1.0")
            waiting = b.wait_status(
                lambda s: _wave_condition(s).get("reason") == "Unreachable",
                "b waiting on an unreachable a",
                120,
            )
            assert waiting["phase"] == "WaitingForWave"
            assert "region a" in _wave_condition(waiting)["message"]
            assert b.weight() == 0
        finally:
            start_apiserver(regions.region("a"))
        b.wait_phase("Succeeded", 180)


def test_a_release_rejected_later_is_reverted_in_the_first_region(
    regions: RegionsInfo, tmp_path: Path
) -> None:
    def waves(cluster: str, namespace: str) -> dict[str, Any]:
        if cluster == "a":
            return {"before": [wave_region("b", namespace, SOAK)], "revertOnLaterFailure": True}
        if cluster == "b":
            return {"after": [wave_region("a", namespace, 0)]}
        return {}

    # Region a's operator runs with only the rights deploy/ gives it: the reader Secret and
    # the ConfigMap that keeps the release before are granted by deploy/waves/operator.
    with _shops(regions, tmp_path, waves, release="r1", as_account=frozenset("a")) as shops:
        a, b = shops["a"], shops["b"]
        # The same release r2 in both; b's overlay makes it fail there.
        _release(a.kubectl, a.namespace, "2.0.0", release="r2")
        _release(b.kubectl, b.namespace, "2.0.0", error_rate=0.5, release="r2")
        promoted = a.wait_phase("Succeeded", 120)
        assert promoted["stableRelease"] == f"annotation:{RELEASE_KEY}=r2"
        # The release before is kept, owned by the rollout (it goes when the rollout goes),
        # as its copy is removed (the scale-down delay after the promotion).
        found = wait_until(
            lambda: a.kubectl.run("get", "configmap", "shop-previous-stable", "-n", a.namespace,
                                  "-o", "json"),
            "the release before kept", 60, until=lambda found: found.returncode == 0,
        )  # fmt: skip
        kept = json.loads(found.stdout)
        assert kept["data"]["revision"] == promoted["previousStableRevision"]
        owner = json.loads(a.kubectl.check("get", "pro", "shop", "-n", a.namespace, "-o", "json"))
        assert [o["uid"] for o in kept["metadata"]["ownerReferences"]] == [owner["metadata"]["uid"]]
        b.wait_phase("Failed", 180)
        reverted = a.wait_status(
            lambda s: (
                s.get("phase") == "Failed"
                and s.get("stableRelease") == f"annotation:{RELEASE_KEY}=r1"
            ),
            "a reverted to r1",
            120,
        )
        assert reverted["stableRevision"] == promoted["previousStableRevision"]
        events = json.loads(a.kubectl.check("get", "events", "-n", a.namespace, "-o", "json"))[
            "items"
        ]
        assert any(e.get("reason") == "RevertedOnLaterFailure" for e in events)
        wait_until(
            lambda: _stable_runs(a.kubectl, a.namespace, reverted["stableRevision"]),
            "a's stable copy back on r1",
            120,
        )
        # All of a's traffic is on the release before, from here on (once a's gateway has
        # applied what was written).
        a.caught_up()
        start = time.monotonic()
        samples = a.traffic_after(start, 40)
        assert {version for _, version, _ in samples} == {"1.0.0"}
        assert a.weight() == 0


def _stable_runs(kubectl: KubectlRunner, namespace: str, revision: str) -> bool:
    deployment = json.loads(
        kubectl.check("get", "deployment", f"shop-{revision}", "-n", namespace, "-o", "json")
    )
    annotations = deployment["metadata"].get("annotations") or {}
    status = deployment.get("status") or {}
    replicas = deployment["spec"].get("replicas", 1)
    return bool(
        annotations.get("tidegate.io/revision") == revision
        and status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
    )


def test_an_undo_in_the_first_region_is_followed_by_the_next(
    regions: RegionsInfo, tmp_path: Path
) -> None:
    def waves(cluster: str, namespace: str) -> dict[str, Any]:
        if cluster == "b":
            return {"after": [wave_region("a", namespace, 0)], "revertOnUpstreamRollback": True}
        return {}

    lean = {
        "strategy": {"canary": {"steps": [{"setWeight": 50}], "scaleDownDelaySeconds": 5}},
        "rollbackWindow": {"revisions": 1},
    }
    with _shops(regions, tmp_path, waves, spec=lean) as shops:
        a, b = shops["a"], shops["b"]
        old = a.status()["stableRevision"]
        for shop in (a, b):  # one commit, both regions
            _release(shop.kubectl, shop.namespace, "1.1.0")

        def new_stable(status: dict[str, Any]) -> bool:
            return status.get("phase") == "Succeeded" and status.get("stableRevision") != old

        promoted = {
            name: shop.wait_status(new_stable, f"1.1.0 promoted in {name}", 180)
            for name, shop in (("a", a), ("b", b))
        }
        new_release = promoted["a"]["stableRelease"]
        assert promoted["b"]["stableRelease"] == new_release
        b.caught_up()
        assert {v for _, v, _ in b.traffic_after(time.monotonic(), 30)} == {"1.1.0"}
        started_before = Counter(e["reason"] for e in events(b.kubectl, b.namespace))

        started = undo(a)
        undone = a.wait_status(
            lambda s: s.get("stableRevision") == old, "a back on 1.0.0 (undo)", 60
        )
        assert undone["rejectedRelease"] == new_release  # published for b
        reverted = b.wait_status(
            lambda s: s.get("phase") == "Failed" and s.get("stableRelease") != new_release,
            "b back on 1.0.0 after a's undo",
            60,
        )
        degraded = next(c for c in reverted["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "RevertedWithUpstream"
        assert "region a" in degraded["message"]
        # Measured through b's gateway: b's requests go back to 1.0.0 with no error, and
        # no step ran (no rollout started, no canary weight) on the way back.
        b.caught_up()
        settled = b.traffic_after(time.monotonic(), 60)
        assert {v for _, v, _ in settled} == {"1.0.0"}, Counter(v for _, v, _ in settled)
        answers = [s for s in b.load.samples if s[0] > started]
        failed = Counter(code for _, _, code in answers if code != 200)
        assert answers and not failed, failed
        last_new = max((at for at, v, _ in answers if v == "1.1.0"), default=started)
        print(f"b's last 1.1.0 answer {last_new - started:.1f}s after a's undo")
        reasons = Counter(e["reason"] for e in events(b.kubectl, b.namespace))
        assert reasons["RevertedWithUpstream"] == 1
        assert reasons["RolloutStarted"] == started_before["RolloutStarted"]
        assert b.weight() == 0
        target = b.kubectl.check(
            "get", "-n", b.namespace, "deployment/shop",
            "-o", "jsonpath={.spec.template.spec.containers[0].env}",
        )  # fmt: skip
        assert "1.1.0" in target  # b's target still holds the release (its Git commit)
