"""spec.analysis.load through the reconcile loop: jobs handed to a recording loadtester, and
a loadtester that cannot be reached reported without holding anything up."""

from __future__ import annotations

from typing import Any

from fakes import NAMESPACE, World, example_spec
from test_reconciler import PROMETHEUS, settle

from tidegate.ports import LoadError
from tidegate.reconciler import Reconciler

LOADTESTER = "http://tidegate-loadtester.tidegate-system:8080"
URL = "http://{{ canaryService }}.{{ namespace }}.svc:80/"
CANARY_URL = f"http://shop-canary.{NAMESPACE}.svc:80/"


def loaded_world(**load: Any) -> World:
    spec = example_spec()
    spec["analysis"] = {**spec["analysis"], "load": {"url": URL, "rate": 20, **load}}
    world = World()
    world.add_target()
    world.add_rollout(spec)
    return world


def reconciler(world: World, loadtester: str | None = LOADTESTER) -> Reconciler:
    return Reconciler(
        world.ports(), PROMETHEUS, clock=world.clock, default_loadtester_url=loadtester
    )


def jobs(world: World) -> list[tuple[Any, ...]]:
    return [c[1:] for c in world.calls if c[0] == "drive_load"]


async def test_each_analysed_step_drives_load_at_the_canary_until_it_passes() -> None:
    world = loaded_world()
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    # The example's three steps are each analysed once (interval 4s): a lease of 9 s as each
    # starts, and none after its one passing measurement.
    assert jobs(world) == [(LOADTESTER, f"{NAMESPACE}/shop", CANARY_URL, 20, 9.0)] * 3
    # Load goes out only once the step runs: after the route holds the step's weight.
    names = world.names()
    first_load = names.index("drive_load")
    assert "set_traffic" in names[:first_load]


async def test_the_rollouts_own_loadtester_comes_before_the_operators() -> None:
    world = loaded_world(loadtester="http://mine:8080")
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    assert {job[0] for job in jobs(world)} == {"http://mine:8080"}


async def test_an_unreachable_loadtester_is_degraded_but_never_holds_a_rollback() -> None:
    world = loaded_world()
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.fail["drive_load"] = LoadError(f"loadtester {LOADTESTER} cannot be reached: refused")
    world.metric_value = 0.5  # the canary fails its checks
    world.set_version("1.2.0")
    seen: list[dict[str, Any] | None] = []
    rec_passes = 0
    while world.status.get("phase") != "Failed" and rec_passes < 50:
        delay = await rec.reconcile(NAMESPACE, "shop")
        seen.append(world.condition("Degraded"))
        world.wait(delay)
        rec_passes += 1
    assert world.status["phase"] == "Failed"
    reported = [c for c in seen if c is not None and c["reason"] == "LoadtesterUnreachable"]
    assert reported and reported[0]["status"] == "True"
    assert "cannot be reached" in reported[0]["message"]
    warnings = [(t, r) for t, r, _ in world.events() if r == "LoadtesterUnreachable"]
    assert warnings == [("Warning", "LoadtesterUnreachable")]  # once, not at each try
    # Rolled back on the failed checks, all traffic on stable; the load's problem goes
    # with the rollout that had it.
    assert world.canary_weight == 0
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["reason"] == "AnalysisFailed"


async def test_a_loadtester_back_clears_the_condition() -> None:
    world = loaded_world()
    world.add_rollout(
        {
            **world.rollout["spec"],  # type: ignore[index]
            "strategy": {"canary": {"steps": [{"analysis": {"iterations": 3}}]}},
        }
    )
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.fail["drive_load"] = LoadError("loadtester down")
    world.set_version("1.1.0")
    for _ in range(10):
        delay = await rec.reconcile(NAMESPACE, "shop")
        world.wait(delay)
        degraded = world.condition("Degraded")
        if degraded is not None and degraded["status"] == "True":
            break
    assert world.status["phase"] == "Progressing"
    del world.fail["drive_load"]
    before = len(jobs(world))
    for _ in range(10):
        delay = await rec.reconcile(NAMESPACE, "shop")
        world.wait(delay)
        if len(jobs(world)) > before and world.status.get("phase") == "Progressing":
            break
    degraded = world.condition("Degraded")
    assert degraded is not None and degraded["status"] == "False"
    assert world.status["phase"] in ("Progressing", "Succeeded")


async def test_no_loadtester_address_is_reported() -> None:
    world = loaded_world()
    rec = reconciler(world, loadtester=None)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    for _ in range(10):
        delay = await rec.reconcile(NAMESPACE, "shop")
        world.wait(delay)
        degraded = world.condition("Degraded")
        if degraded is not None and degraded["status"] == "True":
            break
    assert degraded is not None and degraded["reason"] == "LoadtesterUnavailable"
    assert "--loadtester-url" in degraded["message"]
    assert jobs(world) == []


async def test_headers_from_the_named_secret_go_with_each_job_and_nowhere_else() -> None:
    world = loaded_world(headers={"X-Tenant": "shop"}, headersSecretRef={"name": "load-auth"})
    world.secrets[(NAMESPACE, "load-auth")] = {"Authorization": "Bearer s3cret"}
    rec = reconciler(world)
    await settle(world, {"Initialized"}, rec)
    world.set_version("1.1.0")
    await settle(world, {"Succeeded"}, rec)
    assert len(jobs(world)) == 3
    assert world.load_headers == [{"X-Tenant": "shop", "Authorization": "Bearer s3cret"}] * 3
    # Read again for each job: a rotated credential is used by the next one.
    assert [c for c in world.calls if c[0] == "read_secret"] == [
        ("read_secret", NAMESPACE, "load-auth")
    ] * 3
    assert "s3cret" not in str(world.rollout) + str(world.events())


async def test_a_missing_refused_or_bad_headers_secret_is_reported_by_key_never_by_value() -> None:
    cases: list[tuple[dict[str, str] | None, bool, str, str]] = [
        (None, False, "LoadHeadersSecretNotFound", "Secret default/load-auth does not exist"),
        (None, True, "LoadHeadersSecretUnreadable", "cannot be read (Forbidden)"),
        ({"Bad Name": "s3cret"}, True, "InvalidSpec", "key 'Bad Name' of Secret"),
        ({"X-Key": "s3cret\r\nInjected: 1"}, True, "InvalidSpec", "a line break or NUL"),
        ({"x-tenant": "s3cret"}, True, "InvalidSpec", "is also in load.headers"),
    ]
    for data, present, reason, text in cases:
        world = loaded_world(headers={"X-Tenant": "shop"}, headersSecretRef={"name": "load-auth"})
        if present:
            world.secrets[(NAMESPACE, "load-auth")] = data
        rec = reconciler(world)
        await settle(world, {"Initialized"}, rec)
        world.set_version("1.1.0")
        for _ in range(10):
            world.wait(await rec.reconcile(NAMESPACE, "shop"))
            degraded = world.condition("Degraded")
            if degraded is not None and degraded["status"] == "True":
                break
        assert degraded is not None and degraded["reason"] == reason, (reason, degraded)
        assert text.replace("default", NAMESPACE) in degraded["message"], degraded
        assert jobs(world) == []  # no job without its headers
        assert "s3cret" not in str(world.rollout) + str(world.events())
