"""Channels, test alerts and incidents through a real `lastseen control` process, with
real receivers on 127.0.0.1 (HTTP and SMTP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..support.aio import fetch
from ..support.receivers import HttpReceiver, Mailbox, http_receiver, smtp_server, status
from .conftest import Control, body

BOT = "123456:" + "B" * 35


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpReceiver]:
    with http_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def control_env(receiver, mailbox) -> dict[str, str]:
    return {
        "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1",
        "LASTSEEN_SMTP_URL": mailbox.url,
        "LASTSEEN_SMTP_FROM": "alerts@lastseen.test",
        "LASTSEEN_TELEGRAM_API": f"{receiver.url}/telegram",
    }


@pytest.fixture(scope="module")
def owner(control: Control) -> str:
    return control.bootstrap("acme", "owner@acme.test", "owner")


def test_a_channel_keeps_its_secrets_sealed_and_shows_them_masked(control, owner, receiver):
    url = f"{receiver.url}/services/T000/B000/XXXXsecretpath"
    with control.client(owner) as c:
        created = c.post("/channels", json={"type": "slack", "name": "ops", "config": {"url": url}})
        assert created.status_code == 201, created.text
        channel = body(created)
        assert channel["config"] == {"url": f"{receiver.url}/…path"}
        listed = body(c.get("/channels"))["channels"]
        got = body(c.get(f"/channels/{channel['id']}"))
    assert got == channel and channel in listed
    for response_text in (created.text, str(listed), str(got)):
        assert "XXXXsecretpath" not in response_text
    (row,) = fetch(
        control.dsn,
        "SELECT config::text, secret_envelope FROM channels WHERE id = $1",
        channel["id"],
    )
    assert "secretpath" not in row["config"] + row["secret_envelope"]
    assert row["secret_envelope"].startswith('{"v":2,"kid":"default"')


def test_a_webhook_signing_secret_is_generated_and_shown_once(control, owner, receiver):
    with control.client(owner) as c:
        created = body(
            c.post(
                "/channels",
                json={"type": "webhook", "name": "hook", "config": {"url": receiver.url}},
            )
        )
        again = body(c.get(f"/channels/{created['id']}"))
    assert created["signingSecret"].startswith("whsec_")
    assert "signingSecret" not in again
    assert again["config"]["signingSecret"] == "…" + created["signingSecret"][-4:]


def test_patch_merges_config_and_keeps_omitted_secrets(control, owner, receiver):
    with control.client(owner) as c:
        ch = body(
            c.post(
                "/channels",
                json={"type": "telegram", "name": "tg", "config": {"botToken": BOT, "chatId": 1}},
            )
        )
        patched = c.patch(
            f"/channels/{ch['id']}", json={"name": "tg2", "config": {"chatId": "@ops_room"}}
        )
        assert patched.status_code == 200, patched.text
    assert body(patched)["config"] == {"chatId": "@ops_room", "botToken": "…BBBB"}
    assert body(patched)["name"] == "tg2"


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"type": "pager", "name": "x", "config": {}}, "type", "type must be one of 'email', 'webhook', 'slack', 'discord', 'teams' or 'telegram'"),
        ({"type": "slack", "name": "x", "config": {}}, "config.url", "config.url is required"),
        ({"type": "slack", "name": "x", "config": {"url": "gopher://x"}}, "config.url", "config.url must be an http:// or https:// URL"),
        ({"type": "email", "name": "x", "config": {"to": "nope"}}, "config.to", "config.to is not one email address: An email address must have an @-sign."),
        ({"type": "email", "name": "x", "config": {"to": "a@b.test"}, "extra": 1}, "extra", "unknown field 'extra'"),
    ],
)  # fmt: skip
def test_bad_channels_get_422_naming_the_field(control, owner, payload, field, message):
    with control.client(owner) as c:
        response = c.post("/channels", json=payload)
    assert response.status_code == 422
    assert body(response)["error"] == {"code": "invalid", "message": message, "field": field}


def test_monitors_take_channel_ids_from_their_own_organisation_only(control, owner):
    stranger = control.bootstrap("other", "owner@other.test", "owner")
    with control.client(stranger) as c:
        theirs = body(
            c.post(
                "/channels", json={"type": "email", "name": "x", "config": {"to": "x@other.test"}}
            )
        )
    with control.client(owner) as c:
        mine = body(
            c.post(
                "/channels", json={"type": "email", "name": "m", "config": {"to": "m@acme.test"}}
            )
        )
        bad = c.post(
            "/monitors",
            json={
                "name": "n",
                "url": "u",
                "intervalSec": 60,
                "channelIds": [mine["id"], theirs["id"]],
            },
        )
        assert bad.status_code == 422
        assert body(bad)["error"] == {
            "code": "invalid",
            "message": f"no such channel: {theirs['id']}",
            "field": "channelIds",
        }
        monitor = body(
            c.post(
                "/monitors",
                json={"name": "n", "url": "u", "intervalSec": 60, "channelIds": [mine["id"]]},
            )
        )
        assert monitor["channelIds"] == [mine["id"]]
        patched = body(c.patch(f"/monitors/{monitor['id']}", json={"channelIds": []}))
        assert patched["channelIds"] == []
        assert c.delete(f"/channels/{mine['id']}").status_code == 204
        assert c.get(f"/channels/{mine['id']}").status_code == 404


def test_send_test_alert_reports_every_channel_with_its_exact_error(
    control, owner, receiver, mailbox
):
    mailbox.refuse.add("nobody@acme.test")
    with control.client(owner) as c:
        hook = body(
            c.post(
                "/channels",
                json={
                    "type": "webhook",
                    "name": "ok",
                    "config": {"url": f"{receiver.url}/ok", "signingSecret": "x" * 16},
                },
            )
        )
        slack = body(
            c.post(
                "/channels",
                json={"type": "slack", "name": "gone", "config": {"url": f"{receiver.url}/gone"}},
            )
        )
        tg = body(
            c.post(
                "/channels",
                json={"type": "telegram", "name": "tg", "config": {"botToken": BOT, "chatId": 42}},
            )
        )
        mail = body(
            c.post(
                "/channels",
                json={"type": "email", "name": "nobody", "config": {"to": "nobody@acme.test"}},
            )
        )
        monitor = body(c.post("/monitors", json={
            "name": "nightly", "url": "u", "intervalSec": 60, "alertEmail": "ops@acme.test",
            "channelIds": [hook["id"], slack["id"], tg["id"], mail["id"]]}))  # fmt: skip

        def rule(request):
            if request.path == "/gone":
                return 404, {}, b"no_service"
            return 200, {}, b"{}"

        receiver.rule = rule
        before = len(receiver.requests)
        response = c.post(f"/monitors/{monitor['id']}/test-alert")
        receiver.rule = status(200)
    assert response.status_code == 200, response.text
    assert body(response)["results"] == [
        {"channelId": hook["id"], "type": "webhook", "name": "ok", "ok": True, "error": None},
        {
            "channelId": slack["id"],
            "type": "slack",
            "name": "gone",
            "ok": False,
            "error": "HTTP 404 from 127.0.0.1: no_service",
        },
        {"channelId": tg["id"], "type": "telegram", "name": "tg", "ok": True, "error": None},
        {
            "channelId": mail["id"],
            "type": "email",
            "name": "nobody",
            "ok": False,
            "error": "SMTP 550 5.1.1 user unknown",
        },
        {"channelId": None, "type": "email", "name": "ops@acme.test", "ok": True, "error": None},
    ]
    sent = receiver.requests[before:]
    assert {r.path for r in sent} == {"/ok", "/gone", f"/telegram/bot{BOT}/sendMessage"}
    webhook = next(r for r in sent if r.path == "/ok")
    assert webhook.json()["event"] == "test" and webhook.json()["incident"] is None
    assert mailbox.wait_for(1)[-1]["Subject"] == "[lastseen] Test alert: nightly"
    # No incident opened; the attempts are on record.
    assert fetch(control.dsn, "SELECT * FROM incidents WHERE monitor_id = $1", monitor["id"]) == []
    rows = fetch(
        control.dsn, "SELECT kind, status FROM notifications WHERE monitor_id = $1", monitor["id"]
    )
    assert sorted(tuple(r) for r in rows) == sorted(
        [("test", "delivered")] * 3 + [("test", "failed")] * 2
    )


def test_incidents_are_listed_and_shown_with_their_notifications(control, owner):
    with control.client(owner) as c:
        monitor = body(c.post("/monitors", json={"name": "inc", "url": "u", "intervalSec": 60}))
    control.sql(
        "INSERT INTO incidents (org_id, monitor_id, opened_at, resolved_at) SELECT org_id, id,"
        " now() - interval '2 hours', now() - interval '1 hour' FROM monitors WHERE id = $1",
        monitor["id"],
    )
    control.sql(
        "INSERT INTO incidents (org_id, monitor_id, opened_at) SELECT org_id, id, now()"
        " FROM monitors WHERE id = $1",
        monitor["id"],
    )
    control.sql(
        "INSERT INTO notifications (org_id, monitor_id, incident_id, channel_type, address,"
        " channel_ref, kind, status, attempts, next_attempt_at, last_error, created_at)"
        " SELECT org_id, monitor_id, id, 'email', 'ops@acme.test', 'email:ops@acme.test',"
        " 'alert', 'pending', 2, now() + interval '10 seconds', 'SMTP 451 try later', now()"
        " FROM incidents WHERE monitor_id = $1 AND resolved_at IS NULL",
        monitor["id"],
    )
    with control.client(owner) as c:
        listed = body(c.get(f"/incidents?monitorId={monitor['id']}"))["incidents"]
        assert [i["state"] for i in listed] == ["open", "resolved"]
        assert [
            i["id"]
            for i in body(c.get(f"/incidents?monitorId={monitor['id']}&state=open"))["incidents"]
        ] == [listed[0]["id"]]
        first_page = body(c.get(f"/incidents?monitorId={monitor['id']}&limit=1"))
        assert first_page["nextBefore"] == listed[0]["id"]
        rest = body(
            c.get(f"/incidents?monitorId={monitor['id']}&before={first_page['nextBefore']}")
        )
        assert [i["id"] for i in rest["incidents"]] == [listed[1]["id"]]
        detail = body(c.get(f"/incidents/{listed[0]['id']}"))
        shown = body(c.get(f"/monitors/{monitor['id']}"))
    (notification,) = detail["notifications"]
    assert notification["kind"] == "alert" and notification["status"] == "pending"
    assert notification["attempts"] == 2 and notification["lastError"] == "SMTP 451 try later"
    assert notification["channelId"] is None and notification["type"] == "email"
    assert [i["id"] for i in shown["incidents"]] == [i["id"] for i in listed]
    assert detail["monitorName"] == "inc" and detail["resolvedAt"] is None
