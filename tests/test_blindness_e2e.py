"""Blindness end to end through `lastseen serve` (two ingest processes, the worker), in
real time with real traffic: 2,000 monitors on 30 s pinged over HTTP, all pings stopped
for 90 s (the client side; lastseen stays up), then resumed except ten that stay dead.
Not one incident notification for the resumed monitors, one operator alert (the owner's
email, the channel marked for system alerts) and one "pings are back", the dead ones
alerted at their deadline from when pings came back, and the status page says
"unknown" meanwhile.

About four minutes of real time, so it runs with LASTSEEN_SLOW=1 (`make test-faults`);
`make test` holds the same scenario at the ingest (tests/ingest/test_blindness.py: real
pings into a real ingest and PostgreSQL, its clock stepped), and the worker's side in
tests/control/test_blindness_alerts.py."""

from __future__ import annotations

import socket
import threading
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from core.seed import SeededMonitor, seed_monitors

from .support.aio import fetch, run
from .support.receivers import http_receiver, smtp_server
from .support.serving import serving, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # real time: make test-faults

N = 2_000
INTERVAL = 30
GRACE = 5
GAP = 90


class Fleet:
    """The client side: each monitor pings once every INTERVAL at its own phase, over
    pipelined HTTP/1.1 connections, from a thread; `alive` says who pings, `stopped`
    stops everyone (the load balancer in front died)."""

    def __init__(self, port: int, tokens: list[str]) -> None:
        self.port, self.tokens = port, tokens
        self.alive = set(range(len(tokens)))
        self.stopped = threading.Event()
        self.done = threading.Event()
        self.answers: dict[int, int] = {}
        self.sent = 0

    def run(self) -> None:
        start = time.monotonic()
        second = 0
        while not self.done.is_set():
            if not self.stopped.is_set():
                due = [k for k in self.alive if k % INTERVAL == second % INTERVAL]
                self._ping([self.tokens[k] for k in due])
            second += 1
            self.done.wait(max(0.0, start + second - time.monotonic()))

    def _ping(self, tokens: list[str]) -> None:
        if not tokens:
            return
        requests = [f"POST /api/v1/heartbeats/{t} HTTP/1.1\r\nHost: f\r\n\r\n" for t in tokens]
        requests[-1] = requests[-1].replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall("".join(requests).encode())
            data = b""
            while chunk := s.recv(1 << 16):
                data += chunk
        for line in data.split(b"\r\n"):
            if line.startswith(b"HTTP/1.1 "):
                status = int(line.split(b" ")[1])
                self.answers[status] = self.answers.get(status, 0) + 1
        self.sent += len(tokens)


def test_pings_stopped_for_everyone_page_the_operator_once_and_nobody_else(
    database_url, tmp_path: Path
):
    with (
        http_receiver() as receiver,
        smtp_server() as box,
        serving(
            database_url,
            tmp_path,
            ingest_procs=2,
            settled=True,
            LASTSEEN_ALLOW_PRIVATE_TARGETS="1",
            LASTSEEN_SMTP_URL=box.url,
        ) as served,  # fmt: skip
    ):
        c = httpx.Client(
            base_url=served.api, headers={"authorization": f"Bearer {served.pat}"}, timeout=30
        )
        system = c.post("/channels", json={
            "type": "webhook", "name": "ops", "config": {"url": f"{receiver.url}/ops"},
            "systemAlerts": True,
        }).json()  # fmt: skip
        assert system["systemAlerts"] is True
        own = c.post("/channels", json={
            "type": "webhook", "name": "alerts", "config": {"url": f"{receiver.url}/alerts"},
        }).json()  # fmt: skip
        # Two thousand monitors in the owner's organisation, straight into the database
        # (the API would take a minute), each with the alerts channel.
        seeded = run(_seed(database_url))
        fetch(
            database_url,
            "INSERT INTO monitor_channels (monitor_id, channel_id)"
            " SELECT unnest($1::bigint[]), $2",
            [m.id for m in seeded], own["id"],
        )  # fmt: skip
        c.post("/status-pages", json={
            "slug": "fleet", "title": "Fleet", "monitorIds": [m.id for m in seeded[:5]],
        }).raise_for_status()  # fmt: skip
        port = int(served.origin.rsplit(":", 1)[1])
        fleet = Fleet(port, [m.token for m in seeded])
        # Loaded by both ingest processes (the change feed) before the fleet starts.
        wait_until(lambda: _ping_status(port, seeded[0].token, seeded[-1].token) == {204}, 30)
        dead = set(range(7, N, N // 10))
        thread = threading.Thread(target=fleet.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: _state_count(database_url, "up") == N, INTERVAL + 15)
            time.sleep(2)
            fleet.stopped.set()  # the load balancer in front of lastseen dies
            stopped_at = time.time()
            wait_until(lambda: _state_count(database_url, "unknown") >= N // 2, GAP)
            page = httpx.get(f"{served.origin}/status/fleet.json", timeout=10).json()
            assert page["overall"] == "unknown"
            time.sleep(max(0.0, stopped_at + GAP - time.time()))
            fleet.alive -= dead
            fleet.stopped.clear()
            resumed_at = time.time()
            alerts = receiver.wait_for(len(dead), "/alerts", within=INTERVAL + GRACE + 40)
            time.sleep(3)  # anything more would have come with them
        finally:
            fleet.done.set()
            thread.join(10)
        assert set(fleet.answers) == {204}
        # Not one notification for a resumed monitor; the dead ones, each once, on time.
        dead_ids = {seeded[k].id for k in dead}
        assert sorted(a.json()["monitor"]["id"] for a in receiver.on("/alerts")) == sorted(dead_ids)
        periods = fetch(
            database_url,
            "SELECT extract(epoch FROM back_at)::float8 AS back FROM blind_periods",
        )
        assert 1 <= len(periods) <= 2  # one per ingest process
        latest_back = max(p["back"] for p in periods)
        assert resumed_at < latest_back + 1
        for alert in alerts:
            expected = datetime.fromisoformat(alert.json()["incident"]["expectedAt"]).timestamp()
            assert resumed_at < expected <= latest_back + INTERVAL + GRACE + 1
        # One operator alert and one "pings are back", to the system channel and the owner.
        wait_until(lambda: len(receiver.on("/ops")) == 2, 15)
        assert [r.json()["event"] for r in receiver.on("/ops")] == [
            "system.blind", "system.sighted",
        ]  # fmt: skip
        wait_until(lambda: len(box.messages) == 2, 15)
        assert [(m["To"], m["Subject"]) for m in box.messages] == [
            ("owner@localhost", "[lastseen] lastseen CANNOT SEE PINGS"),
            ("owner@localhost", "[lastseen] lastseen SEES PINGS AGAIN"),
        ]
        assert _state_count(database_url, "unknown") == 0


async def _seed(dsn: str) -> list[SeededMonitor]:
    conn = await asyncpg.connect(dsn)
    try:
        return await seed_monitors(conn, N, interval_sec=INTERVAL, grace_sec=GRACE, org="default")
    finally:
        await conn.close()


def _ping_status(port: int, *tokens: str) -> set[int]:
    probe = Fleet(port, list(tokens))
    for _ in range(4):  # new connections: the kernel picks either process
        probe._ping(list(tokens))
    return set(probe.answers)


def _state_count(dsn: str, state: str) -> int:
    rows = fetch(dsn, "SELECT count(*) AS n FROM monitor_state WHERE state = $1", state)
    return int(rows[0]["n"])
