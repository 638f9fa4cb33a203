"""The gateway's realistic mode (--route-delay): changes reach the routing snapshot a while
after they are seen, one object's changes in the order seen. Pure: clock readings are
given, nothing waits."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import pytest
from test_gateway_plans import SERVICES as SHOP_SERVICES
from test_gateway_plans import weighted
from test_gateway_routing import pod

from tidegate_devenv import cli
from tidegate_devenv.delayed import (
    PODS,
    ROUTES,
    SERVICES,
    DelayedView,
    max_jitter,
    seconds_arg,
)
from tidegate_devenv.environment import gateway_command
from tidegate_devenv.gateway import Gateway, parse_args

KEY = ("demo", "shop")


def state(version: int, name: str = "shop") -> dict[str, Any]:
    return {"metadata": {"namespace": "demo", "name": name, "resourceVersion": str(version)}}


class Draws(random.Random):
    """Jitter draws in a given order: uniform(a, b) answers a + share * (b - a)."""

    def __init__(self, *shares: float) -> None:
        super().__init__(0)
        self.shares = list(shares)

    def uniform(self, a: float, b: float) -> float:
        return a + self.shares.pop(0) * (b - a)


def applied(view: DelayedView, kind: str = ROUTES) -> list[dict[str, Any]]:
    return [dict(obj) for obj in view.items(kind)]


def test_without_a_delay_a_change_is_applied_at_once() -> None:
    view = DelayedView(0.0)
    assert view.seen(ROUTES, KEY, state(1), now=5.0) is True
    assert applied(view) == [state(1)]
    assert view.next_due() is None and view.pending == 0
    assert view.seen(ROUTES, KEY, None, now=5.0) is True
    assert applied(view) == []


def test_a_change_is_applied_after_the_delay_and_its_jitter() -> None:
    view = DelayedView(2.0, Draws(0.5))  # jitter 0.5 * min(0.4, 0.5) = 0.2 s
    assert view.seen(ROUTES, KEY, state(1), now=10.0) is False
    assert view.next_due() == pytest.approx(12.2)
    assert view.apply_due(12.19) is False
    assert applied(view) == []
    assert view.apply_due(12.2) is True
    assert applied(view) == [state(1)]
    assert view.next_due() is None
    assert view.apply_due(20.0) is False  # nothing left


@pytest.mark.parametrize("delay", [0.1, 1.0, 2.5, 10.0])
def test_jitter_stays_within_its_bound(delay: float) -> None:
    view = DelayedView(delay, random.Random(7))
    lags = []
    for i in range(200):
        seen_at = i * 100.0  # far apart: no change waits for an earlier one
        view.seen(PODS, ("demo", f"p{i}"), state(i), now=seen_at)
        due = view.next_due()
        assert due is not None
        lags.append(due - seen_at)
        view.apply_due(due)
    assert min(lags) >= delay
    assert max(lags) <= delay + min(0.2 * delay, 0.5)
    assert max(lags) - min(lags) > 0.5 * max_jitter(delay)  # really drawn, not constant


def version_of(view: DelayedView, key: tuple[str, str]) -> int | None:
    for obj in view.items(ROUTES):
        meta = obj["metadata"]
        if (meta["namespace"], meta["name"]) == key:
            return int(meta["resourceVersion"])
    return None


def test_changes_apply_in_the_order_seen_across_objects() -> None:
    # The first change draws the most jitter and the later ones none: left alone, they
    # would be due first, and the older state would be applied last.
    view = DelayedView(1.0, Draws(1.0, 0.0, 0.0))
    view.seen(ROUTES, KEY, state(1), now=0.0)  # due 1.2
    view.seen(ROUTES, KEY, state(2), now=0.05)  # due 1.05 on its own: held back to 1.2
    other = ("demo", "other")
    view.seen(ROUTES, other, state(9, "other"), now=0.05)  # another object: held back too
    steps = []
    while (due := view.next_due()) is not None:
        view.apply_due(due)
        steps.append((due, version_of(view, KEY), version_of(view, other)))
    assert steps == [(pytest.approx(1.2), 2, 9)]  # all at once, in the order seen


def test_changes_due_together_apply_oldest_first() -> None:
    view = DelayedView(1.0, Draws(0.0, 0.0, 0.0))
    view.seen(ROUTES, KEY, state(1), now=0.0)
    view.seen(ROUTES, KEY, None, now=0.0)
    view.seen(ROUTES, KEY, state(3), now=0.0)
    assert view.apply_due(1.0) is True
    assert applied(view) == [state(3)]


def test_a_deletion_is_delayed_too() -> None:
    view = DelayedView(1.0, Draws(0.0, 0.0))
    view.seen(SERVICES, KEY, state(1), now=0.0)
    view.apply_due(1.0)
    view.seen(SERVICES, KEY, None, now=3.0)
    view.apply_due(3.9)
    assert applied(view, SERVICES) == [state(1)]
    view.apply_due(4.0)
    assert applied(view, SERVICES) == []


def test_latest_due_is_when_everything_seen_so_far_is_applied() -> None:
    view = DelayedView(1.0, Draws(1.0, 0.0))
    assert view.latest_due == float("-inf")
    view.seen(PODS, ("demo", "a"), state(1), now=0.0)
    view.seen(PODS, ("demo", "b"), state(1), now=0.1)
    assert view.latest_due == pytest.approx(1.2)


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_a_delay_is_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(ValueError):
        DelayedView(bad)


@pytest.mark.parametrize("text", ["-1", "inf", "nan", "soon", ""])
def test_seconds_arg_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds_arg(text)


def test_the_gateway_takes_route_delay() -> None:
    assert parse_args([]).route_delay == 0.0
    assert parse_args(["--route-delay", "1.5"]).route_delay == 1.5
    with pytest.raises(SystemExit):
        parse_args(["--route-delay", "-2"])


def test_gateway_command_passes_a_delay_on_only_when_there_is_one(tmp_path: Path) -> None:
    assert not any(a.startswith("--route-delay") for a in gateway_command(tmp_path, tmp_path, 1, 2))
    command = gateway_command(tmp_path, tmp_path, 1, 2, route_delay=0.75)
    assert "--route-delay=0.75" in command


def test_dev_up_takes_the_flag_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = cli.build_parser()
    monkeypatch.delenv(cli.ROUTE_DELAY_ENV, raising=False)
    assert cli.route_delay(parser.parse_args(["up"]).route_delay) == 0.0
    monkeypatch.setenv(cli.ROUTE_DELAY_ENV, "1.25")
    assert cli.route_delay(parser.parse_args(["up"]).route_delay) == 1.25
    assert cli.route_delay(parser.parse_args(["up", "--route-delay", "0"]).route_delay) == 0.0
    monkeypatch.setenv(cli.ROUTE_DELAY_ENV, "later")
    with pytest.raises(SystemExit):
        cli.route_delay(None)


# --- the gateway on a delayed view --------------------------------------------------------

PODS_OF_SHOP = [
    pod("p", {"app": "shop-primary", "pod-template-hash": "p"}, env={"VERSION": "1"}),
    pod("c", {"app": "shop", "pod-template-hash": "c"}, env={"VERSION": "2"}),
]


def seen_all(gateway: Gateway, route: dict[str, Any]) -> None:
    gateway.seen(ROUTES, ("demo", "shop"), route)
    for service in SHOP_SERVICES:
        gateway.seen(SERVICES, ("demo", service["metadata"]["name"]), service)
    for p in PODS_OF_SHOP:
        gateway.seen(PODS, ("demo", p["metadata"]["name"]), p)


def test_the_snapshot_and_plans_change_when_a_change_is_applied(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, route_delay=1.0, seed=3)
    seen_all(gateway, weighted(80, 20))
    due = gateway.view.next_due()
    assert due is not None
    gateway.apply_due(due - 0.5)
    assert gateway.snapshot.routes == ()
    assert list(gateway.plan_history) == []
    gateway.apply_due(gateway.view.latest_due)
    assert gateway.snapshot.plans() == {("demo", "shop"): {"1": 0.8, "2": 0.2}}
    assert [entry[1:] for entry in gateway.plan_history] == [("demo", "shop", {"1": 0.8, "2": 0.2})]
    assert [r["metadata"]["name"] for r in gateway.applied()[0]] == ["shop"]
    assert ("demo", "shop-canary") in gateway.applied()[1]


def test_the_gateway_is_ready_once_the_first_lists_are_applied(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, route_delay=1.0, seed=3)
    seen_all(gateway, weighted(80, 20))
    gateway.informers_synced()
    gateway.apply_due(gateway.view.latest_due - 0.01)
    assert gateway.synced is False
    gateway.apply_due(gateway.view.latest_due)
    assert gateway.synced is True


def test_without_a_delay_the_gateway_is_not_delayed(tmp_path: Path) -> None:
    assert Gateway(tmp_path).delayed is False
    assert Gateway(tmp_path, route_delay=0.5).delayed is True


def test_a_deleted_pod_keeps_its_template_until_the_deletion_is_applied(tmp_path: Path) -> None:
    # What reconcile hands DemoPool.mark_used is the applied snapshot's templates: a
    # deleted pod's demo app keeps serving through the delay, then its grace period starts.
    gateway = Gateway(tmp_path, route_delay=1.0, seed=3)
    seen_all(gateway, weighted(80, 20))
    gateway.apply_due(gateway.view.latest_due)
    assert set(gateway.snapshot.templates) == {"demo/p", "demo/c"}
    gateway.seen(PODS, ("demo", "c"), None)
    due = gateway.view.next_due()
    assert due is not None
    gateway.apply_due(due - 0.01)
    assert set(gateway.snapshot.templates) == {"demo/p", "demo/c"}
    gateway.apply_due(due)
    assert set(gateway.snapshot.templates) == {"demo/p"}
