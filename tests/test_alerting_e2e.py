"""End to end through `lastseen serve`, in real time: a monitor stops pinging, goes down,
an incident opens and every channel hears of it, with the time of the last ping and the
deadline it missed; the next ping resolves it and every channel hears of the recovery. A
second monitor, paused while down, has its incident closed as a pause: no channel hears
"pinging again". (The one real-time alerting test: about 35 s.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from core.pg import free_port

from .support.aio import fetch
from .support.exposure import EXPOSURE
from .support.receivers import http_receiver, smtp_server, text_of
from .support.serving import answers, shards_settled, wait_until

BOT = "123456:" + "C" * 35


def test_a_silent_monitor_alerts_every_channel_and_its_next_ping_recovers_it(
    database_url, tmp_path: Path
):
    ingest, admin, control = free_port(), free_port(9), free_port()  # admin: per process, + worker
    with http_receiver() as receiver, smtp_server() as box:
        env = {
            **os.environ,
            "LASTSEEN_DATABASE_URL": database_url,
            "LASTSEEN_CONTROL_LISTEN": f"127.0.0.1:{control}",
            "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1",
            "LASTSEEN_SMTP_URL": box.url,
            "LASTSEEN_TELEGRAM_API": f"{receiver.url}/telegram",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "lastseen", "serve", "--data-dir", str(tmp_path),
             "--listen", f"127.0.0.1:{ingest}", "--admin-listen", f"127.0.0.1:{admin}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{ingest}/api/v1"
            wait_until(lambda: answers(f"{api}/openapi.json"), 30)
            # serve's ingest processes share the shards out just after start; a ping before
            # that settles is judged by its new owner from the takeover (the amnesty), and
            # this test holds the alert to the ping's own deadline, to the millisecond.
            wait_until(lambda: shards_settled(database_url), 30)
            pat = (tmp_path / "owner-token").read_text().strip()
            c = httpx.Client(base_url=api, headers={"authorization": f"Bearer {pat}"}, timeout=30)
            configs = [
                ("webhook", {"url": f"{receiver.url}/webhook", "signingSecret": "w" * 20}),
                ("slack", {"url": f"{receiver.url}/slack"}),
                ("discord", {"url": f"{receiver.url}/discord"}),
                ("teams", {"url": f"{receiver.url}/teams"}),
                ("telegram", {"botToken": BOT, "chatId": 99}),
                ("email", {"to": "team@example.test"}),
            ]
            ids = []
            for kind, config in configs:
                created = c.post("/channels", json={"type": kind, "name": kind, "config": config})
                assert created.status_code == 201, created.text
                ids.append(created.json()["id"])
            monitor = c.post("/monitors", json={
                "name": "nightly-backup", "url": "internal://nightly", "type": "heartbeat",
                "intervalSec": 30, "heartbeatGraceSec": 0, "alertThreshold": 1,
                "alertEmail": "ops@example.test", "channelIds": ids,
            }).json()  # fmt: skip
            paused = c.post("/monitors", json={
                "name": "weekly-report", "url": "internal://weekly", "type": "heartbeat",
                "intervalSec": 30, "heartbeatGraceSec": 0, "alertThreshold": 1,
                "channelIds": ids[:1],
            }).json()  # fmt: skip
            token = c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"]
            other = c.get(f"/monitors/{paused['id']}/secrets").json()["heartbeatToken"]
            ping = f"{api}/heartbeats/{token}"
            sent = time.time()
            assert httpx.post(ping, timeout=10).status_code == 204  # pingable once created
            answered = time.time()
            assert httpx.post(f"{api}/heartbeats/{other}", timeout=10).status_code == 204
            pinged = time.monotonic()

            paths = ["/webhook", "/slack", "/discord", "/teams", "/telegram"]
            for path in paths:
                receiver.wait_for(1, path, within=60)
            mails = box.wait_for(2, within=30)
            alerted = time.monotonic() - pinged
            incident = fetch(
                database_url, "SELECT * FROM incidents WHERE monitor_id = $1", monitor["id"]
            )[0]
            assert incident["resolved_at"] is None
            assert c.get(f"/monitors/{monitor['id']}").json()["state"] == "down"
            # The other one, down too, is paused: its incident closes, nothing recovers.
            receiver.wait_for(2, "/webhook", within=30)
            assert c.post(f"/monitors/{paused['id']}/pause").status_code == 200

            assert httpx.post(ping, timeout=10).status_code == 204
            for path in paths:
                receiver.wait_for(2, path, within=30)
            receiver.wait_for(4, "/webhook", within=30)  # and the pause's closing notice
            mails = box.wait_for(4, within=30)
            detail = c.get(f"/incidents/{incident['id']}").json()
            c.close()
        finally:
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=30)
    EXPOSURE.text("lastseen serve output", "process outputs", output, allowed=(pat,))
    assert process.returncode == 0, output
    assert detail["state"] == "resolved"
    assert sorted((n["type"], n["kind"], n["status"]) for n in detail["notifications"]) == sorted(
        (kind, k, "delivered")
        for kind in ("webhook", "slack", "discord", "teams", "telegram", "email", "email")
        for k in ("alert", "recovery")
    )
    hooks = [r.json() for r in receiver.on("/webhook")]
    webhook = [w for w in hooks if w["monitor"]["id"] == monitor["id"]]
    assert [w["event"] for w in webhook] == ["incident.opened", "incident.resolved"]
    assert webhook[0]["monitor"] == {"id": monitor["id"], "name": "nightly-backup"}
    assert webhook[0]["incident"]["id"] == incident["id"]
    # The alert says when the last ping was (the one we sent) and when the next was due.
    last_ping = datetime.fromisoformat(webhook[0]["incident"]["lastPingAt"]).timestamp()
    expected = datetime.fromisoformat(webhook[0]["incident"]["expectedAt"]).timestamp()
    assert sent - 0.01 <= last_ping <= answered + 0.01, (sent, last_ping, answered)
    assert abs(expected - (last_ping + 30)) < 0.001  # interval 30 s, grace 0
    assert [w["incident"]["resolvedBy"] for w in webhook] == [None, "ping"]
    closing = [w for w in hooks if w["monitor"]["id"] == paused["id"]]
    assert [(w["event"], w["incident"]["resolvedBy"]) for w in closing] == [
        ("incident.opened", None), ("incident.resolved", "pause"),
    ]  # fmt: skip
    assert receiver.on("/slack")[1].json()["text"].startswith("RECOVERED: nightly-backup")
    alert_mail = next(m for m in mails if m["Subject"] == "[lastseen] DOWN: nightly-backup")
    when = datetime.fromtimestamp(last_ping, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"last ping at {when} (" in text_of(alert_mail)
    assert sorted(m["To"] for m in mails) == ["ops@example.test", "ops@example.test",
                                              "team@example.test", "team@example.test"]  # fmt: skip
    # No secret reaches a log line: heartbeat token, bot token, signing secret.
    for secret in (token, BOT, "w" * 20):
        assert secret not in output
    row_after_miss = (incident["created_at"] - incident["opened_at"]).total_seconds()
    delivered = [datetime.fromisoformat(n["deliveredAt"]) for n in detail["notifications"]
                 if n["kind"] == "alert"]  # fmt: skip
    spread = [(d - incident["created_at"]).total_seconds() for d in delivered]
    print(
        f"\nping to every channel alerted: {alerted:.1f} s (interval 30 s, grace 0);"
        f" missed deadline to incident row: {row_after_miss:.2f} s; incident row to each"
        f" alert delivered: {min(spread):.2f}-{max(spread):.2f} s"
    )
