"""Notifications, the pure part: the API fields, which happenings become which messages, the
providers' bodies, and reading a provider's config from the Secret's value."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tidegate.adapters.notifications import (
    DEFAULT_SECRET,
    SecretData,
    SecretProviders,
    parse_provider,
)
from tidegate.api import (
    NotificationEvent,
    NotificationProvider,
    RolloutPhase,
    RolloutSpec,
    RolloutStatus,
    TeamsFormat,
)
from tidegate.notify import EVENT_REASONS, SCHEMA_VERSION, Message, happenings, messages, render
from tidegate.ports import NotifierError

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
EARLIER = datetime(2026, 11, 26, 11, 59, 0, tzinfo=UTC)
URL = "https://hooks.example.com/services/T000/B000/secret-token"


def spec(notifications: list[dict[str, Any]] | None) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "shop"},
            "service": {"name": "shop", "port": 80},
            "strategy": {"canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}]}},
            "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}},
            "notifications": notifications,
        }
    )


def progressing(step: int, started: datetime | None, weight: int) -> RolloutStatus:
    return RolloutStatus(
        phase=RolloutPhase.PROGRESSING,
        stable_revision="aaa",
        canary_revision="bbb",
        current_step_index=step,
        current_step_name=f"weight-{weight}",
        canary_weight=weight,
        step_started_at=started,
    )


def test_every_notification_event_is_mapped_and_no_reason_twice() -> None:
    assert set(EVENT_REASONS) == set(NotificationEvent)
    reasons = [r for rs in EVENT_REASONS.values() for r in rs]
    assert len(reasons) == len(set(reasons))
    assert EVENT_REASONS[NotificationEvent.ROLLED_BACK] == {"RolledBack"}
    assert EVENT_REASONS[NotificationEvent.STARTED] == {"RolloutStarted", "RolloutRestarted"}


def test_the_spec_refuses_unknown_events_repeats_and_bad_provider_names() -> None:
    ok = spec([{"provider": "team-chat", "events": ["started", "rolledBack"]}])
    assert ok.notifications is not None
    assert ok.notifications[0].events == [
        NotificationEvent.STARTED,
        NotificationEvent.ROLLED_BACK,
    ]
    for bad in (
        [{"provider": "team-chat", "events": ["exploded"]}],
        [{"provider": "team-chat", "events": ["started", "started"]}],
        [{"provider": "team-chat", "events": []}],
        [{"provider": "team chat", "events": ["started"]}],
        [{"provider": "team-chat", "events": ["started"], "url": URL}],  # never in the spec
    ):
        with pytest.raises(ValidationError):
            spec(bad)


def test_a_provider_config_needs_a_known_type_and_an_http_url() -> None:
    config = NotificationProvider.model_validate({"type": "teams", "url": URL})
    assert config.format is TeamsFormat.MESSAGE_CARD
    for bad in ({"type": "pager", "url": URL}, {"type": "slack", "url": "ftp://x"}, {"url": URL}):
        with pytest.raises(ValidationError):
            NotificationProvider.model_validate(bad)


def test_only_the_asked_events_go_to_each_provider() -> None:
    wanted = spec(
        [
            {"provider": "chat", "events": ["started", "promoted"]},
            {"provider": "hook", "events": ["started", "step", "rolledBack"]},
        ]
    )
    old = RolloutStatus(phase=RolloutPhase.SUCCEEDED, stable_revision="aaa")
    new = progressing(0, NOW, 10)
    events = [("RolloutStarted", "Rolling out revision bbb"), ("Initialized", "ignored")]
    sent = messages(wanted, "ns", "shop", old, new, events, NOW)
    assert [(p, m.event.value) for p, m in sent] == [
        ("chat", "started"),
        ("hook", "started"),
        ("hook", "step"),
    ]
    assert messages(spec(None), "ns", "shop", old, new, events, NOW) == []


def test_a_step_is_told_when_it_begins_and_not_while_it_runs() -> None:
    began = happenings(progressing(0, EARLIER, 10), progressing(1, NOW, 50), [])
    assert [(e.value, r) for e, r, _ in began] == [("step", "StepStarted")]
    assert "Step 2 (weight-50)" in began[0][2] and "50%" in began[0][2]
    assert happenings(progressing(1, NOW, 50), progressing(1, NOW, 50), []) == []
    assert happenings(progressing(1, NOW, 50), progressing(2, None, 50), []) == []


def message(event: NotificationEvent = NotificationEvent.ROLLED_BACK) -> Message:
    return Message(
        event=event,
        reason="RolledBack",
        namespace="ns",
        name="shop",
        phase="Failed",
        stable_revision="aaa",
        canary_revision="bbb",
        step_index=1,
        step_name="weight-50",
        weight=0,
        message="Rolled back revision bbb: error-rate failed",
        time=NOW,
    )


def test_the_generic_webhook_body_has_the_documented_schema() -> None:
    body = render(NotificationProvider.model_validate({"type": "webhook", "url": URL}), message())
    assert body == {
        "schemaVersion": SCHEMA_VERSION,
        "event": "rolledBack",
        "reason": "RolledBack",
        "rollout": {"namespace": "ns", "name": "shop"},
        "phase": "Failed",
        "stableRevision": "aaa",
        "canaryRevision": "bbb",
        "step": {"index": 1, "name": "weight-50"},
        "weight": 0,
        "message": "Rolled back revision bbb: error-rate failed",
        "time": "2026-11-26T12:00:00Z",
    }


def test_slack_and_teams_bodies() -> None:
    slack = render(NotificationProvider.model_validate({"type": "slack", "url": URL}), message())
    assert slack["text"].startswith("ProgressiveRollout ns/shop: rolled back\n")
    assert slack["attachments"][0]["color"] == "danger"
    fields = slack["attachments"][0]["fields"]
    assert {"title": "Canary revision", "value": "bbb", "short": True} in fields

    teams = NotificationProvider.model_validate({"type": "teams", "url": URL})
    card = render(teams, message(NotificationEvent.PROMOTED))
    assert card["@type"] == "MessageCard" and card["themeColor"] == "2EB886"
    assert {"name": "Step", "value": "2 (weight-50)"} in card["sections"][0]["facts"]

    adaptive = teams.model_copy(update={"format": TeamsFormat.ADAPTIVE_CARD})
    sent = render(adaptive, message())
    content = sent["attachments"][0]["content"]
    assert sent["type"] == "message" and content["type"] == "AdaptiveCard"
    assert content["body"][1]["text"] == "Rolled back revision bbb: error-rate failed"


def test_slack_shows_a_rollouts_text_literally() -> None:
    """A message (a metric's or webhook's name, a Prometheus error) can hold <!channel> or a
    link: Slack gets it escaped, so it shows it as text."""
    import dataclasses

    sneaky = dataclasses.replace(message(), message="<!channel> see <https://x.example|here> & go")
    slack = render(NotificationProvider.model_validate({"type": "slack", "url": URL}), sneaky)
    assert slack["text"].endswith("&lt;!channel&gt; see &lt;https://x.example|here&gt; &amp; go")
    assert "<" not in str(slack) and ">" not in str(slack)


def test_a_bad_provider_value_is_refused_without_showing_its_url() -> None:
    assert parse_provider("ops/n", "hook", f'{{"type": "webhook", "url": "{URL}"}}').url == URL
    for text, said in (
        (f"type: pager\nurl: {URL}", "type"),
        ("[1, 2]", "not a mapping"),
        ("{type: slack, url: [", "neither YAML nor JSON"),
    ):
        with pytest.raises(NotifierError) as raised:
            parse_provider("ops/n", "hook", text)
        assert said in str(raised.value) and "'hook'" in str(raised.value)
        assert "secret-token" not in str(raised.value)
        assert raised.value.reason == "InvalidNotificationProvider"


def test_the_secret_is_read_once_per_ttl_and_missing_keys_are_named() -> None:
    reads: list[float] = []
    now = [0.0]
    data: SecretData = {"chat": f"type: slack\nurl: {URL}"}

    async def read() -> SecretData:
        reads.append(now[0])
        return data

    providers = SecretProviders(read, "ops/tidegate-notifications", ttl=30, clock=lambda: now[0])

    async def scenario() -> None:
        nonlocal data
        assert (await providers.provider("chat")).url == URL
        with pytest.raises(NotifierError) as missing:
            await providers.provider("pager")
        assert missing.value.reason == "NotificationProviderNotFound"
        assert "'pager' is not a key of Secret ops/tidegate-notifications" in str(missing.value)
        assert reads == [0.0]  # cached
        data = None
        now[0] = 31.0
        with pytest.raises(NotifierError, match="does not exist"):
            await providers.provider("chat")
        assert reads == [0.0, 31.0]

    asyncio.run(scenario())


def test_the_notifications_secret_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidegate.cli import build_parser, notifications_secret

    monkeypatch.setenv("POD_NAMESPACE", "tidegate-system")
    assert notifications_secret(None) == ("tidegate-system", DEFAULT_SECRET)
    assert notifications_secret("ops/hooks") == ("ops", "hooks")
    for bad in ("hooks", "/hooks", "ops/", "a/b/c"):
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            notifications_secret(bad)
    args = build_parser().parse_args(["run", "--notifications-secret", "ops/hooks"])
    assert args.notifications_secret == "ops/hooks"


def test_a_provider_is_allowed_in_the_namespaces_it_lists_by_name_or_pattern() -> None:
    anywhere = parse_provider("ops/n", "p", f"type: webhook\nurl: {URL}")
    assert anywhere.allows("any") and anywhere.namespaces is None
    kept = parse_provider("ops/n", "p", f"type: webhook\nurl: {URL}\nnamespaces: [shop, team-*]")
    assert kept.allows("shop") and kept.allows("team-a") and kept.allows("team-")
    assert not kept.allows("shopping") and not kept.allows("TEAM-a") and not kept.allows("x")
    nowhere = parse_provider("ops/n", "p", f"type: webhook\nurl: {URL}\nnamespaces: []")
    assert not nowhere.allows("shop")
