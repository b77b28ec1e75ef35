"""Each channel against a real receiver: the payload it sends, and how it reads failures."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from notifier import channels
from notifier.base import Notice, Settings, Transport, TransportError
from notifier.schema import ConfigError

from ..support.aio import run
from ..support.receivers import http_receiver, smtp_server, stall, status, text_of

OPENED = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
LAST_PING = datetime(2026, 11, 26, 2, 59, 25, 500_000, tzinfo=UTC)  # interval 30, grace 5
NOTICE = Notice(
    kind="alert", monitor_id=7, monitor_name="nightly-backup", incident_id=42,
    opened_at=OPENED, resolved_at=None, sent_at=datetime(2026, 11, 26, 3, 0, 5, tzinfo=UTC),
    idempotency_key="0b6c1f9e-3d54-4a8e-9a57-1d1f0f3c2b10",
    last_ping_at=LAST_PING, expected_at=OPENED,
)  # fmt: skip
ALERT_TEXT = (
    "Heartbeat monitor “nightly-backup” stopped pinging: last ping at 2026-11-26 02:59:25"
    " UTC (40 s ago), expected by 2026-11-26 03:00:00 UTC."
)
BOT = "123456:" + "A" * 35


def deliver(kind, config, *, notice=NOTICE, settings=None):
    """Send through `kind`; None when it landed, else the TransportError."""
    public, secret = channels.validate(kind, config)

    async def go():
        async with Transport(settings or Settings(allow_private=True)) as transport:
            await channels.send(kind, notice, public, secret, transport)

    try:
        run(go())
    except TransportError as exc:
        return exc
    return None


def test_webhook_posts_the_notice_signed_with_an_idempotency_key():
    with http_receiver() as receiver:
        config = {"url": f"{receiver.url}/hooks/abc", "signingSecret": "s" * 32}
        assert deliver("webhook", config) is None
        (request,) = receiver.requests
    assert request.path == "/hooks/abc"
    assert request.json() == {
        "event": "incident.opened",
        "monitor": {"id": 7, "name": "nightly-backup"},
        "incident": {
            "id": 42,
            "openedAt": OPENED.isoformat(),
            "resolvedAt": None,
            "resolvedBy": None,
            "lastPingAt": LAST_PING.isoformat(),
            "expectedAt": OPENED.isoformat(),
            "cause": "missed",
            "exitStatus": None,
        },
        "sentAt": "2026-11-26T03:00:05+00:00",
    }
    assert request.headers["idempotency-key"] == NOTICE.idempotency_key
    t, v1 = request.headers["lastseen-signature"].split(",")
    stamp = int(NOTICE.sent_at.timestamp())
    assert t == f"t={stamp}"
    mac = hmac.new(b"s" * 32, f"{stamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert v1 == f"v1={mac}"


def test_slack_discord_and_teams_payloads():
    with http_receiver() as receiver:
        for kind in ("slack", "discord", "teams"):
            assert deliver(kind, {"url": f"{receiver.url}/{kind}"}) is None
        slack, discord, teams = (r.json() for r in receiver.requests)
    assert slack["text"].startswith("DOWN: nightly-backup.")
    assert ALERT_TEXT in slack["blocks"][0]["text"]["text"]
    assert discord["content"] == "DOWN: nightly-backup"
    assert discord["allowed_mentions"] == {"parse": []}
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert card["content"]["body"][0]["text"] == "DOWN: nightly-backup"


def test_telegram_calls_send_message_on_the_configured_bot_api():
    with http_receiver() as receiver:
        settings = Settings(allow_private=True, telegram_api=receiver.url)
        assert deliver("telegram", {"botToken": BOT, "chatId": -100123}, settings=settings) is None
        (request,) = receiver.requests
    assert request.path == f"/bot{BOT}/sendMessage"
    body = request.json()
    assert body["chat_id"] == "-100123"
    assert body["text"].startswith("DOWN: nightly-backup\n")


@pytest.mark.parametrize(
    ("rule", "permanent", "message", "retry_after"),
    [
        (status(404, b"no_service"), True, "HTTP 404 from 127.0.0.1: no_service", None),
        (status(400, b"invalid_payload"), True, "HTTP 400 from 127.0.0.1: invalid_payload", None),
        (status(500, b"oops"), False, "HTTP 500 from 127.0.0.1: oops", None),
        (status(503), False, "HTTP 503 from 127.0.0.1", None),
        (status(408), False, "HTTP 408 from 127.0.0.1", None),
        (status(429, b"slow down", retry_after="120"), False, "HTTP 429 from 127.0.0.1: slow down", 120.0),
        (status(429, retry_after="99999"), False, "HTTP 429 from 127.0.0.1", 3600.0),
        (status(301, location="http://10.0.0.5/"), True, "HTTP 301 from 127.0.0.1: redirects are not followed", None),
    ],
    ids=["404", "400", "500", "503", "408", "429", "429-clamped", "redirect"],
)  # fmt: skip
def test_http_failures_are_classified(rule, permanent, message, retry_after):
    with http_receiver() as receiver:
        receiver.rule = rule
        error = deliver("slack", {"url": f"{receiver.url}/services/T0/B0/secretpath"})
    assert error is not None
    assert (error.permanent, error.message, error.retry_after) == (permanent, message, retry_after)
    assert "secretpath" not in error.message


def test_discord_and_telegram_retry_after_come_from_their_bodies():
    with http_receiver() as receiver:
        receiver.rule = status(
            429, b'{"message": "You are being rate limited.", "retry_after": 2.5}'
        )
        error = deliver("discord", {"url": f"{receiver.url}/api/webhooks/1/x"})
        assert error and error.retry_after == 2.5 and not error.permanent
        assert error.message == "HTTP 429 from 127.0.0.1: You are being rate limited."
        receiver.rule = status(429, json.dumps({
            "ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7}}).encode())  # fmt: skip
        settings = Settings(allow_private=True, telegram_api=receiver.url)
        error = deliver("telegram", {"botToken": BOT, "chatId": "1"}, settings=settings)
        assert error and error.retry_after == 7.0
        receiver.rule = status(400, b'{"ok":false,"description":"Bad Request: chat not found"}')
        error = deliver("telegram", {"botToken": BOT, "chatId": "1"}, settings=settings)
    assert error and error.permanent
    assert error.message == "HTTP 400 from 127.0.0.1: Bad Request: chat not found"
    assert BOT not in error.message


def test_timeouts_and_refused_connections_are_retried():
    with http_receiver() as receiver:
        receiver.rule = stall(1.0)
        error = deliver(
            "webhook", {"url": receiver.url}, settings=Settings(allow_private=True, timeout=0.2)
        )
    assert error and not error.permanent
    assert error.message == "timeout after 0.2 s from 127.0.0.1"
    # The receiver is gone now: nothing listens on its port.
    error = deliver("webhook", {"url": receiver.url})
    assert error and not error.permanent
    assert error.message == "connection refused by 127.0.0.1"


def test_email_goes_out_with_text_and_html_bodies():
    with smtp_server() as box:
        settings = Settings(allow_private=True, smtp_url=box.url, smtp_from="alerts@lastseen.test")
        assert deliver("email", {"to": "ops@example.test"}, settings=settings) is None
        (mail,) = box.messages
    assert mail["Subject"] == "[lastseen] DOWN: nightly-backup"
    assert mail["From"] == "alerts@lastseen.test" and mail["To"] == "ops@example.test"
    assert ALERT_TEXT in text_of(mail)
    assert "<h1" in text_of(mail, "html")


def test_an_unknown_mailbox_is_a_permanent_smtp_error():
    with smtp_server() as box:
        box.refuse.add("nobody@example.test")
        settings = Settings(allow_private=True, smtp_url=box.url)
        error = deliver("email", {"to": "nobody@example.test"}, settings=settings)
    assert error and error.permanent
    assert error.message == "SMTP 550 5.1.1 user unknown"


def test_email_without_a_server_says_what_to_configure():
    error = deliver("email", {"to": "ops@example.test"}, settings=Settings())
    assert error and not error.permanent
    assert error.message == "email is not configured: set LASTSEEN_SMTP_URL"


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("pager", {}, "type"),
        ("webhook", {}, "config.url"),
        ("webhook", {"url": "ftp://example.com/x"}, "config.url"),
        ("webhook", {"url": "https://example.com/x", "signingSecret": "short"}, "config.signingSecret"),
        ("slack", {"url": "https://hooks.slack.com/x", "channel": "#ops"}, "config.channel"),
        ("telegram", {"botToken": "nope", "chatId": 1}, "config.botToken"),
        ("telegram", {"botToken": BOT, "chatId": "not a chat"}, "config.chatId"),
        ("email", {"to": "not-an-address"}, "config.to"),
    ],
)  # fmt: skip
def test_bad_configuration_names_the_field(kind, config, field):
    with pytest.raises(ConfigError) as caught:
        channels.validate(kind, config)
    assert caught.value.field == field or (field == "type" and caught.value.field == "config.type")


def test_secrets_are_shown_masked():
    public, secret = channels.validate(
        "slack", {"url": "https://hooks.slack.com/services/T0/B0/XYZsecret1234"}
    )
    assert channels.view("slack", public, secret) == {"url": "https://hooks.slack.com/…1234"}
    public, secret = channels.validate("telegram", {"botToken": BOT, "chatId": "@ops_room"})
    assert channels.view("telegram", public, secret) == {"chatId": "@ops_room", "botToken": "…AAAA"}


# -- hostile names and addresses (issue 16, items 3, 9 and 10) ------------------------------

BREAKS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("breaker", BREAKS, ids=[f"U+{ord(b):04X}" for b in BREAKS])
def test_a_line_break_in_a_monitor_name_cannot_break_or_block_an_email(breaker):
    name = f"nightly{breaker}Bcc: victim@example.test"
    notice = dataclasses.replace(NOTICE, monitor_name=name)
    with smtp_server() as box:
        settings = Settings(allow_private=True, smtp_url=box.url, smtp_from="alerts@lastseen.test")
        assert (
            deliver("email", {"to": "ops@example.test"}, notice=notice, settings=settings) is None
        )
        (mail,) = box.messages
        recipients = box.recipients
    assert mail["Subject"] == "[lastseen] DOWN: nightly Bcc: victim@example.test"
    assert mail["Bcc"] is None and recipients == ["ops@example.test"]


@pytest.mark.parametrize(
    "value",
    ["a@b.example\r\nBcc: x@y.example", "a@b.example, c@d.example", "a<victim@example.test>",
     "Ops <ops@example.test>", "a\x00b@c.example", "no-at-sign", "a@b@c.example", ""],
)  # fmt: skip
def test_an_email_channel_takes_exactly_one_address(value):
    with pytest.raises(ConfigError) as refused:
        channels.validate("email", {"to": value})
    assert refused.value.field == "config.to"


def test_addresses_are_normalised_and_localhost_is_allowed():
    assert channels.validate("email", {"to": " Ops@Example.TEST "})[0] == {"to": "Ops@example.test"}
    assert channels.validate("email", {"to": "root@localhost"})[0] == {"to": "root@localhost"}


EVIL = "<!channel> <https://evil.example|Sign in> [Sign in](https://evil.example) *x*"


def test_slack_escapes_a_name_so_it_cannot_mention_or_link():
    notice = dataclasses.replace(NOTICE, monitor_name=EVIL)
    with http_receiver() as receiver:
        assert deliver("slack", {"url": f"{receiver.url}/services/T/B/x"}, notice=notice) is None
        (request,) = receiver.requests
    sent = request.json()
    for text in (sent["text"], sent["blocks"][0]["text"]["text"]):
        assert "<!channel>" not in text and "<https://" not in text
        assert "&lt;!channel&gt; &lt;https://evil.example|Sign in&gt;" in text


def test_discord_escapes_markdown_and_mentions_nobody():
    notice = dataclasses.replace(NOTICE, monitor_name=EVIL + " @everyone")
    with http_receiver() as receiver:
        assert (
            deliver("discord", {"url": f"{receiver.url}/api/webhooks/1/x"}, notice=notice) is None
        )
        (request,) = receiver.requests
    sent = request.json()
    assert sent["allowed_mentions"] == {"parse": []}
    description = sent["embeds"][0]["description"]
    assert "[Sign in](https" not in description
    assert r"\[Sign in\]\(https\://evil.example\)" in description
    assert r"\@everyone" in sent["content"]


def test_teams_breaks_markdown_links_in_a_name():
    notice = dataclasses.replace(NOTICE, monitor_name=EVIL)
    with http_receiver() as receiver:
        assert deliver("teams", {"url": f"{receiver.url}/webhook/x"}, notice=notice) is None
        (request,) = receiver.requests
    body = request.json()["attachments"][0]["content"]["body"]
    for block in body:
        assert "](" not in block["text"]
    assert "Sign in" in body[1]["text"]


def test_every_notice_says_what_happened_and_when():
    """The alert names the last ping and the deadline it missed (not the deadline as the
    last ping); a recovery names the ping; a pause is a closing, never a recovery."""
    assert NOTICE.text == ALERT_TEXT
    hours_later = replace(NOTICE, sent_at=LAST_PING + timedelta(hours=2, minutes=5, seconds=9))
    assert "(2 h 5 min ago)" in hours_later.text
    resolved = datetime(2026, 11, 26, 3, 4, 10, tzinfo=UTC)
    recovery = replace(NOTICE, kind="recovery", resolved_at=resolved, resolved_by="ping")
    assert recovery.title == "RECOVERED: nightly-backup"
    assert recovery.text == (
        "Heartbeat monitor “nightly-backup” is pinging again: a ping at 2026-11-26 03:04:10"
        " UTC, late since 2026-11-26 03:00:00 UTC."
    )
    closed = replace(NOTICE, kind="closed", resolved_at=resolved, resolved_by="pause")
    assert closed.title == "PAUSED: nightly-backup"
    assert "pinging again" not in closed.text and "RECOVERED" not in closed.title
    assert closed.text == (
        "Monitoring of heartbeat monitor “nightly-backup” was paused at 2026-11-26 03:04:10"
        " UTC while it was down (late since 2026-11-26 03:00:00 UTC): its incident is closed"
        " without a recovery; no ping has arrived."
    )
    assert closed.as_json()["event"] == "incident.resolved"
    assert closed.as_json()["incident"]["resolvedBy"] == "pause"
    unknown = replace(NOTICE, last_ping_at=None)  # an incident from before version 13
    assert unknown.text.endswith("stopped pinging: no ping by 2026-11-26 03:00:00 UTC.")


def test_a_failure_is_told_as_a_failure_with_its_exit_status():
    failed = replace(NOTICE, cause="failed", exit_status=3, expected_at=None)
    assert failed.title == "FAILED: nightly-backup"
    assert failed.text == (
        "Job of heartbeat monitor “nightly-backup” reported a failure (exit status 3) at"
        " 2026-11-26 03:00:00 UTC. The ping before it: 2026-11-26 02:59:25 UTC (40 s ago)."
    )
    assert failed.as_json()["incident"]["cause"] == "failed"
    assert failed.as_json()["incident"]["exitStatus"] == 3
    plain = replace(failed, exit_status=None, last_ping_at=None)  # /fail, never pinged
    assert plain.text == (
        "Job of heartbeat monitor “nightly-backup” reported a failure at 2026-11-26 03:00:00"
        " UTC. No ping before it."
    )
    recovered = replace(failed, kind="recovery", resolved_at=OPENED + timedelta(minutes=5))
    assert recovered.title == "RECOVERED: nightly-backup"
    assert recovered.text == (
        "Heartbeat monitor “nightly-backup” succeeded again: a ping at 2026-11-26 03:05:00"
        " UTC, failing since 2026-11-26 03:00:00 UTC."
    )


def test_a_hung_run_is_told_as_running_too_long():
    hung = replace(NOTICE, cause="timeout", expected_at=OPENED)
    assert hung.title == "RUNNING TOO LONG: nightly-backup"
    assert hung.text == (
        "Job of heartbeat monitor “nightly-backup” is running too long: started, and no"
        " success or failure by 2026-11-26 03:00:00 UTC (its maxRuntimeSec)."
    )
    assert hung.as_json()["incident"]["cause"] == "timeout"
    done = replace(hung, kind="recovery", resolved_at=OPENED + timedelta(minutes=5))
    assert done.text.endswith("running too long since 2026-11-26 03:00:00 UTC.")
