"""Undo and spec.rollbackWindow end to end: `kubectl tidegate undo` after a promotion puts
every request back on the version before within 5 s of the command (the dev gateway applies
each change 2 s after it sees it), with no failed request; and, with rollbackWindow, going
back to a version that was stable before takes no steps."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import yaml
from rollout_support import Shop, copies, copy_of, events, set_version, undo

from tidegate_devenv.paths import CANARY_EXAMPLE
from tidegate_devenv.traffic import Sample
from tidegate_devenv.waiting import wait_until

WITHIN = 5.0  # seconds from the command to every request on the version before


def rollout_with_window(revisions: int) -> str:
    rollout = yaml.safe_load((CANARY_EXAMPLE / "rollout.yaml").read_text())
    rollout["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}]
    rollout["spec"]["rollbackWindow"] = {"revisions": revisions}
    return yaml.safe_dump(rollout)


def all_on(shop: Shop, version: str) -> None:
    shop.caught_up()
    recent = shop.traffic_after(time.monotonic(), 60)
    assert all(v == version and code == 200 for _, v, code in recent), Counter(
        (v, code) for _, v, code in recent
    )


def wait_parked(shop: Shop, revision: str) -> None:
    """The copy of `revision` kept at zero replicas (rollbackWindow), not removed."""
    wait_until(
        lambda: copies(shop.kubectl, shop.namespace).get(copy_of(revision), {}),
        f"the copy of {revision} kept at no pod", 60,
        until=lambda found: bool(found) and found["spec"]["replicas"] == 0,
    )  # fmt: skip


def answers_since(shop: Shop, started: float) -> list[Sample]:
    """The load's answers from `started` until 2 s past the 5 s (waited for by count: 60
    requests/s)."""
    shop.load.responses_after(started + WITHIN + 2, 30)
    return [s for s in shop.load.samples if s[0] >= started]


def test_undo_and_the_rollback_window_take_a_former_version_back_at_once(
    start_shop: Callable[..., Shop],
) -> None:
    shop = start_shop(rollout_with_window(1))
    old = shop.status()["stableRevision"]
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("phase") == "Succeeded" and s.get("stableRevision") != old,
        "1.1.0 promoted", 120,
    )  # fmt: skip
    new = shop.status()["stableRevision"]
    all_on(shop, "1.1.0")
    # Inside the window, 1.0.0's copy is kept at zero replicas: undo brings it up first.
    wait_parked(shop, old)

    started = undo(shop)
    answers = answers_since(shop, started)
    failed = [s for s in answers if s[2] != 200]
    assert not failed, Counter(code for _, _, code in failed)
    late = [at - started for at, version, _ in answers if version != "1.0.0"]
    assert not late or max(late) <= WITHIN, f"1.1.0 answered {max(late):.1f}s after undo"
    assert any(version == "1.0.0" for _, version, _ in answers)
    status = shop.status()
    assert (status["phase"], status["stableRevision"]) == ("Succeeded", old), status
    assert "undo" not in str(
        shop.kubectl.check(
            "get", "-n", shop.namespace, "pro/shop", "-o", "jsonpath={.metadata.annotations}"
        )
    )
    target = shop.kubectl.check(
        "get", "-n", shop.namespace, "deployment/shop",
        "-o", "jsonpath={.spec.template.spec.containers[0].env}",
    )  # fmt: skip
    assert "1.0.0" in target  # the target holds the version it serves again

    # 1.1.0 is in the window now: setting it again takes it back without steps either.
    wait_parked(shop, new)
    before = Counter(e["reason"] for e in events(shop.kubectl, shop.namespace))
    set_version(shop.kubectl, shop.namespace, "1.1.0")
    shop.wait_status(
        lambda s: s.get("stableRevision") == new, "1.1.0 stable again", 60
    )  # fmt: skip
    all_on(shop, "1.1.0")
    after = Counter(e["reason"] for e in events(shop.kubectl, shop.namespace))
    assert after["RolloutStarted"] == before["RolloutStarted"], after
    assert after["RolledBackFast"] > before["RolledBackFast"], after
