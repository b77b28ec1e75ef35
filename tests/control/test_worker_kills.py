"""The alert worker SIGKILLed at random points during a storm (issue 6, scenario 8):
1,000 incidents on a webhook (100 in the everyday run), arriving in 200 waves (10); after
each wave a real `lastseen worker` starts and is SIGKILLed a random moment (up to 0.1 s)
after it began to deliver. Then one last worker finishes. Every notification must have reached the
receiver, each under its own Idempotency-Key; a key may arrive twice only if a kill fell
between its two arrivals (the worker died after sending, before recording the outcome).

A killed worker's rows stay claimed for the lease (45 s); after each kill the test moves
those leases' ends to the present, as if the lease had run out, instead of waiting.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
import pytest

from ..support.aio import run
from ..support.alerthelp import KEYRING, channel, event, org
from ..support.receivers import Received, http_receiver, ok

SLOW = bool(os.environ.get("LASTSEEN_SLOW"))
INCIDENTS = 1000 if SLOW else 100
KILLS = 200 if SLOW else 10
READ_LAG = 0.2  # seconds; a new worker needs far longer to start and deliver

pytestmark = pytest.mark.faults


def slow_ok(request: Received) -> tuple[int, dict[str, str], bytes]:
    time.sleep(0.01)  # a receiver that takes a moment: kills land mid-request too
    return ok(request)


async def prepare(dsn: str, url: str) -> list[int]:
    """INCIDENTS monitors on one webhook channel; returns their ids."""
    conn = await asyncpg.connect(dsn)
    try:
        org_id = await org(conn)
        ids = [
            r[0]
            for r in await conn.fetch(
                "INSERT INTO monitors (org_id, name, url, interval_sec, grace_sec, token_digest,"
                " token_envelope) SELECT $1, 'm' || i, 'internal://x', 30, 0,"
                " sha256(i::text::bytea), '{}' FROM generate_series(1, $2) i RETURNING id",
                org_id,
                INCIDENTS,
            )
        ]
        await channel(conn, org_id, "webhook", {},
                      {"url": f"{url}/hook", "signingSecret": "s" * 20}, *ids)  # fmt: skip
        return ids
    finally:
        await conn.close()


async def open_incidents(dsn: str, monitor_ids: list[int]) -> None:
    """What the ingest writes when these monitors miss their deadlines."""
    conn = await asyncpg.connect(dsn)
    try:
        now = datetime.now(UTC)
        for monitor_id in monitor_ids:
            await event(conn, monitor_id, "incident_opened", now)
    finally:
        await conn.close()


async def query(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def test_two_hundred_kills_during_a_storm_lose_no_notification(database_url):
    rng = random.Random()
    env = {**os.environ, "LASTSEEN_DATABASE_URL": database_url,
           "LASTSEEN_KEYRING": KEYRING.to_json(), "LASTSEEN_ALLOW_PRIVATE_TARGETS": "1"}  # fmt: skip
    kills: list[float] = []
    with http_receiver() as receiver:
        receiver.rule = slow_ok
        ids = run(prepare(database_url, receiver.url))
        wave = INCIDENTS // KILLS
        started = time.monotonic()
        for k in range(KILLS):
            # The storm goes on: a wave of new incidents, then a worker that dies in it.
            run(open_incidents(database_url, ids[k * wave : (k + 1) * wave]))
            before = len(receiver.requests)
            process = subprocess.Popen([sys.executable, "-m", "lastseen", "worker", "--admin-listen", "127.0.0.1:0"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 20
            while len(receiver.requests) == before and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.1))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(time.monotonic())
            run(query(database_url, "UPDATE notifications SET claimed_until = now()"
                      " WHERE status = 'delivering' RETURNING id"))  # fmt: skip
        # The last worker finishes the storm and is stopped, not killed.
        process = subprocess.Popen([sys.executable, "-m", "lastseen", "worker", "--admin-listen", "127.0.0.1:0"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                [row] = run(query(database_url, "SELECT count(*) FILTER (WHERE status <>"
                                  " 'delivered') AS left FROM notifications"))  # fmt: skip
                if row["left"] == 0:
                    break
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        took = time.monotonic() - started
        received = list(receiver.requests)
    rows = run(query(database_url, "SELECT idempotency_key, status, attempts FROM notifications"))
    assert len(rows) == INCIDENTS
    assert {r["status"] for r in rows} == {"delivered"}
    arrivals: dict[str, list[Received]] = defaultdict(list)
    for r in received:
        arrivals[r.headers["idempotency-key"]].append(r)
    # 0 lost, nothing unknown: the keys that arrived are exactly the notifications' keys.
    assert set(arrivals) == {str(r["idempotency_key"]) for r in rows}
    after_2xx = mid_request = 0
    for key, copies in arrivals.items():
        for first, again in itertools.pairwise(copies):
            # A second arrival of a key only after a kill that fell between the two. (The
            # receiver stamps a request when its thread reads it, which may be a moment
            # after the worker that sent it was killed: READ_LAG allows for that.)
            between = [k for k in kills if first.at - READ_LAG <= k <= again.at]
            assert between, key
            if first.answered is not None and first.answered <= between[-1]:
                after_2xx += 1  # the worker died after the 2xx, before recording it
            else:
                mid_request += 1  # it died while the receiver still held the request
    print(
        f"\n{INCIDENTS} incidents, {len(kills)} SIGKILLs of `lastseen worker` in {took:.0f} s:"
        f" {INCIDENTS} of {INCIDENTS} delivered, 0 lost; repeated deliveries, each with its key"
        f" and after a kill: {after_2xx} after the receiver's 2xx, {mid_request} while it held"
        f" the request; most attempts on one row {max(r['attempts'] for r in rows)}"
    )
