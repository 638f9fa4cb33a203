"""docs/notifications.md's example of the generic webhook's message is one the operator
sends: the engine runs docs/api.md's example rollout (steps 10, 50 and a pause; interval 1m,
failureLimit 2) until its canary fails two measurements, and the `rolledBack` message of
that reconcile, made as the reconciler makes it (the outbox, then the webhook provider's
body), is the document's JSON block."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tidegate import notify, outbox
from tidegate.analysis import Measurement
from tidegate.api import NotificationProvider, RolloutPhase, RolloutSpec, RolloutStatus
from tidegate.engine import Observation, WorkloadState, reconcile, status_traffic
from tidegate.revisions import template_revision

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
START = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=1)
REPLICAS = 3
PROVIDER = NotificationProvider.model_validate(
    {"type": "webhook", "url": "https://audit.example.com/tidegate"}
)

SPEC = RolloutSpec.model_validate(
    {
        "targetRef": {"name": "shop"},
        "service": {"name": "shop", "port": 80},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}},
        "strategy": {"canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}]}},
        "analysis": {
            "interval": "1m",
            "failureLimit": 2,
            "metrics": [{"name": "error-rate", "query": "q", "thresholdRange": {"max": 0.01}}],
        },
        "notifications": [
            {"provider": "audit-log", "events": ["started", "step", "checkFailed", "rolledBack"]}
        ],
    }
)


def pod_template(image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "shop"}},
        "spec": {"containers": [{"name": "shop", "image": image}]},
    }


STABLE = template_revision(pod_template("registry.example.com/shop:1.4.0"))
CANARY = template_revision(pod_template("registry.example.com/shop:1.5.0"))


def ready(revision: str) -> WorkloadState:
    return WorkloadState(revision=revision, replicas=REPLICAS, ready=True)


def observed(now: datetime, target: str, **copies: Any) -> Observation:
    return Observation(
        now=now, generation=1, target_revision=target, target_replicas=REPLICAS, **copies
    )


def sent_while_rolling_back() -> list[dict[str, Any]]:
    """Every webhook body the example rollout's provider is sent, in order, from adoption to
    the rollback."""
    status, now, bodies = RolloutStatus(), START, []
    script = [
        observed(now, STABLE, stable=None, canary=None),
        observed(now, STABLE, stable=ready(STABLE), canary=None),
        observed(now, CANARY, stable=ready(STABLE), canary=None),
        observed(now, CANARY, stable=ready(STABLE), canary=ready(CANARY)),
        observed(now, CANARY, stable=ready(STABLE), canary=ready(CANARY)),
    ]
    too_many_errors = (Measurement(metric="error-rate", value=0.048),)
    for minute in (1, 2):
        at = now + minute * INTERVAL
        script.append(
            observed(
                at, CANARY, stable=ready(STABLE), canary=ready(CANARY), measurements=too_many_errors
            )
        )
    for observation in script:
        # What the operator reads back after its write, and routes holding what it wrote.
        status = RolloutStatus.model_validate(
            status.model_dump(mode="json", by_alias=True, exclude_none=True)
        )
        observation = replace(observation, traffic=status_traffic(status))
        decision = reconcile(SPEC, status, observation)
        told = outbox.collect(SPEC, status, decision.status, decision.actions, observation.now)
        if told is not None:
            for _provider, message in outbox.messages(SPEC, "shop", "shop", decision.status, told):
                bodies.append(notify.render(PROVIDER, message))
        status = decision.status
    assert status.phase is RolloutPhase.FAILED
    return bodies


def documented_message() -> dict[str, Any]:
    text = DOC.read_text()
    section = text[text.index("### The generic webhook's message") :]
    block = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    loaded: dict[str, Any] = json.loads(block.group(1))
    return loaded


def test_the_documented_message_is_the_one_sent_on_a_rollback() -> None:
    sent = sent_while_rolling_back()
    assert [body["event"] for body in sent] == [
        "started",
        "step",
        "checkFailed",
        "rolledBack",
    ]
    rolled_back = sent[-1]
    documented = documented_message()
    assert documented == rolled_back
    assert list(documented) == list(rolled_back)  # the same fields, in the same order


def test_the_documented_message_has_every_field_the_table_describes() -> None:
    text = DOC.read_text()
    table = text[text.index("| `schemaVersion` |") :].split("\n\n")[0]
    described = {
        name.split(".")[0]
        for row in table.splitlines()
        for name in re.findall(r"`([\w.]+)`", row.split("|")[1])
    }
    assert described == set(documented_message())
