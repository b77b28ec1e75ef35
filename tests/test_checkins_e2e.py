"""Check-ins end to end through `lastseen serve` with two ingest processes and a real
webhook receiver: a failing run wrapped by `lastseen run` alerts within 2 s carrying its
exit status, its output is in the ping history with the run's duration, and the next
good run recovers it; failure signals answered by either process (the kernel picks one
per connection) reach the shard's owner and alert; a run that outlives its
maxRuntimeSec alerts as running too long, and one that ends in time does not; a cron
job in Europe/Berlin goes late at its scheduled Berlin instant."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from .support.receivers import HttpReceiver, http_receiver
from .support.serving import Served, serving, wait_until


@contextmanager
def _served(
    dsn: str, tmp_path: Path
) -> Iterator[tuple[Served, httpx.Client, HttpReceiver, dict[str, Any]]]:
    """`lastseen serve` with two ingest processes (their shards settled), an owner's
    client, and a webhook channel to a real receiver."""
    with (
        http_receiver() as receiver,
        serving(
            dsn, tmp_path, ingest_procs=2, settled=True, LASTSEEN_ALLOW_PRIVATE_TARGETS="1"
        ) as served,  # fmt: skip
    ):
        c = httpx.Client(
            base_url=served.api, headers={"authorization": f"Bearer {served.pat}"}, timeout=30
        )
        channel = c.post("/channels", json={
            "type": "webhook", "name": "hook", "config": {"url": f"{receiver.url}/hook"},
        }).json()  # fmt: skip
        yield served, c, receiver, channel


def _run(ping: str, script: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "lastseen", "run", "--url", ping, "--", "sh", "-c", script],
        capture_output=True, timeout=60,
    )  # fmt: skip


def test_a_failed_run_alerts_at_once_with_its_exit_status_and_output(database_url, tmp_path: Path):
    with _served(database_url, tmp_path) as (served, c, receiver, channel):
        monitors = []
        for i in range(9):
            # An hour and three misses: only a failure signal can alert within the test.
            monitors.append(c.post("/monitors", json={
                "name": f"job-{i}", "url": f"internal://job-{i}", "type": "heartbeat",
                "intervalSec": 3600, "heartbeatGraceSec": 60, "alertThreshold": 3,
                "channelIds": [channel["id"]],
            }).json())  # fmt: skip
        tokens = [c.get(f"/monitors/{m['id']}/secrets").json()["heartbeatToken"] for m in monitors]
        pings = [f"{served.api}/heartbeats/{t}" for t in tokens]
        for ping in pings:
            assert httpx.post(ping, timeout=10).status_code == 204  # up

        # The wrapper: start, the command's output passed through, exit status 3.
        sent = time.monotonic()
        done = _run(pings[0], "echo out; sleep 0.3; exit 3")
        assert done.returncode == 3 and done.stdout == b"out\n"
        (alert,) = receiver.wait_for(1, "/hook", within=10)
        assert alert.at - sent < 2 + 1  # the run itself took about 0.3 s of it
        payload = alert.json()
        assert payload["event"] == "incident.opened"
        assert payload["monitor"]["id"] == monitors[0]["id"]
        assert (payload["incident"]["cause"], payload["incident"]["exitStatus"]) == ("failed", 3)
        assert payload["incident"]["expectedAt"] is None  # it was not late: it failed

        def history() -> list[dict]:
            return c.get(f"/monitors/{monitors[0]['id']}/pings").json()["pings"]

        wait_until(lambda: len(history()) == 2, 10)
        end, start = history()
        assert (start["kind"], end["kind"], end["exitStatus"]) == ("start", "fail", 3)
        assert end["body"] == "out\n" and end["runId"] == start["runId"]
        assert end["userAgent"].startswith("lastseen-run/")
        # The run took 0.3 s and more; the ingest measures from the /start it received,
        # which `lastseen run` sends beside the command (never holding it up): on a busy
        # machine it arrives a moment after the command began (0.29 s was seen).
        assert 0.15 <= end["durationSec"] < 10
        incident = c.get("/incidents", params={"monitorId": monitors[0]["id"]}).json()
        assert incident["incidents"][0]["cause"] == "failed"

        # The next good run recovers it.
        assert _run(pings[0], "true").returncode == 0
        recovered = receiver.wait_for(2, "/hook", within=10)[1].json()
        assert recovered["event"] == "incident.resolved"
        assert recovered["incident"]["resolvedBy"] == "ping"

        # Failures of the other monitors, each on a new connection (either process may
        # answer; the one that does not own the shard hands the failure over): every one
        # alerts, once, with its own exit status.
        for i, ping in enumerate(pings[1:], start=1):
            assert httpx.post(f"{ping}/{i}", timeout=10).status_code == 204
        got = receiver.wait_for(2 + 8, "/hook", within=15)[2:]
        statuses = {r.json()["monitor"]["id"]: r.json()["incident"]["exitStatus"] for r in got}
        assert statuses == {m["id"]: i for i, m in enumerate(monitors) if i}
        states = {m["id"]: c.get(f"/monitors/{m['id']}").json()["state"] for m in monitors}
        assert states == {m["id"]: "up" if i == 0 else "down" for i, m in enumerate(monitors)}


def test_a_run_past_its_max_runtime_alerts_as_running_too_long(database_url, tmp_path: Path):
    with _served(database_url, tmp_path) as (served, c, receiver, channel):
        pings = []
        for name in ("hangs", "ends-in-time"):
            monitor = c.post("/monitors", json={
                "name": name, "url": f"internal://{name}", "intervalSec": 3600,
                "heartbeatGraceSec": 60, "maxRuntimeSec": 5, "channelIds": [channel["id"]],
            }).json()  # fmt: skip
            assert monitor["maxRuntimeSec"] == 5
            token = c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"]
            pings.append((monitor["id"], f"{served.api}/heartbeats/{token}"))
        for _, ping in pings:
            for _ in range(4):  # on new connections: either process may answer each
                assert httpx.post(ping, timeout=10).status_code == 204
        started = time.monotonic()
        for _, ping in pings:
            assert httpx.post(f"{ping}/start", timeout=10).status_code == 204
        time.sleep(2)
        assert httpx.post(f"{pings[1][1]}/0", timeout=10).status_code == 204  # in time
        (alert,) = receiver.wait_for(1, "/hook", within=15)
        assert 5 <= alert.at - started < 5 + 3  # the run's deadline, plus a flush
        payload = alert.json()
        assert payload["monitor"]["id"] == pings[0][0]
        assert payload["incident"]["cause"] == "timeout"
        time.sleep(2)  # nothing more comes: the other run ended in time
        assert len(receiver.on("/hook")) == 1
        assert c.get(f"/monitors/{pings[1][0]}").json()["state"] == "up"
        # The job finishes after all: recovered.
        assert httpx.post(f"{pings[0][1]}/0", timeout=10).status_code == 204
        recovered = receiver.wait_for(2, "/hook", within=10)[1].json()
        assert recovered["event"] == "incident.resolved"
        # A PATCH to null drops the deadline (and reaches the ingest: its trigger stamps it).
        patched = c.patch(f"/monitors/{pings[0][0]}", json={"maxRuntimeSec": None})
        assert patched.status_code == 200 and patched.json()["maxRuntimeSec"] is None


def test_a_cron_job_in_berlin_goes_late_at_its_scheduled_instant(database_url, tmp_path: Path):
    """A daily schedule in Europe/Berlin whose run is a few seconds away: its alert comes
    at that Berlin time + grace (read as UTC, the same expression is an hour off)."""
    berlin = ZoneInfo("Europe/Berlin")
    with _served(database_url, tmp_path) as (served, c, receiver, channel):
        now = datetime.now(berlin)
        run_at = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (run_at - now).total_seconds() < 8:  # time to create it and ping it first
            run_at += timedelta(minutes=1)
        expression = f"{run_at.minute} {run_at.hour} * * *"  # once a day, Berlin time
        monitor = c.post("/monitors", json={
            "name": "berlin-nightly", "url": "internal://berlin-nightly",
            "schedule": expression, "tz": "Europe/Berlin", "heartbeatGraceSec": 1,
            "channelIds": [channel["id"]],
        }).json()  # fmt: skip
        assert (monitor["schedule"], monitor["tz"]) == (expression, "Europe/Berlin")
        token = c.get(f"/monitors/{monitor['id']}/secrets").json()["heartbeatToken"]
        assert httpx.post(f"{served.api}/heartbeats/{token}", timeout=10).status_code == 204
        late_at = run_at + timedelta(seconds=1)

        def shown() -> dict[str, Any]:
            got: dict[str, Any] = c.get(f"/monitors/{monitor['id']}").json()
            return got

        wait_until(lambda: shown()["state"] == "up", 5)  # its first ping flushed
        assert datetime.fromisoformat(shown()["nextExpectedAt"]) == late_at
        late_mono = time.monotonic() + (late_at.timestamp() - time.time())
        (alert,) = receiver.wait_for(1, "/hook", within=90)
        assert late_at.timestamp() - time.time() < 0  # not before its instant
        assert 0 <= alert.at - late_mono < 3, alert.at - late_mono  # at it, plus a flush
        payload = alert.json()
        assert payload["event"] == "incident.opened"
        assert payload["monitor"]["id"] == monitor["id"]
