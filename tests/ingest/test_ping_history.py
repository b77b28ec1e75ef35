"""The ping history's writes against a real PostgreSQL: rows in, newest kept, rows of a
monitor deleted meanwhile skipped, and what a row can hold."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import trio

from core import DeadlineTable
from ingest import checkins
from ingest._checkinlog import CheckinLog
from ingest.checkins import Row

from ..support.dbhelp import execute, fetch, http, metrics, running, seed, with_conn

T = 1_800_000_000.0


def row(monitor_id: int, i: int, **fields) -> Row:
    values = {
        "monitor_id": monitor_id, "at": T + i, "kind": "log", "status": -1, "rid": None,
        "method": "POST", "client": "203.0.113.7", "user_agent": "cron", "body": None,
        "body_bytes": 0,
    }  # fmt: skip
    return Row(**{**values, **fields})


async def test_rows_are_written_and_each_monitor_keeps_its_newest(database_url):
    a, b, gone = await seed(database_url, 3)
    await execute(database_url, "DELETE FROM monitors WHERE id = $1", gone.id)
    rows = [row(a.id, i) for i in range(130)] + [row(b.id, i) for i in range(5)]
    rows.append(row(gone.id, 0))  # deleted before its rows were written: skipped
    rows.append(row(b.id, 9, kind="fail", status=3, rid="0f8fad5b-d9cb-469f-a165-70867728950e",
                    body=b"\xffout\n", body_bytes=250_000, user_agent=None, client=None))  # fmt: skip
    written = await with_conn(database_url, lambda c: checkins.write(c, rows, 5.0))
    assert written == 136
    pruned = await with_conn(database_url, lambda c: checkins.prune(c, [a.id, b.id], 100, 5.0))
    assert pruned == 30
    kept = await fetch(
        database_url,
        "SELECT monitor_id, min(extract(epoch FROM received_at)) AS first, count(*) AS n"
        " FROM pings GROUP BY monitor_id ORDER BY monitor_id",
    )
    assert [(r["monitor_id"], r["first"], r["n"]) for r in kept] == [
        (a.id, T + 30, 100), (b.id, T, 6),
    ]  # fmt: skip
    (failed,) = await fetch(database_url, "SELECT * FROM pings WHERE kind = 'fail'")
    assert (failed["exit_status"], str(failed["rid"]), failed["body"]) == (
        3, "0f8fad5b-d9cb-469f-a165-70867728950e", b"\xffout\n",
    )  # fmt: skip
    assert failed["body_bytes"] == 250_000 and failed["client_addr"] is None


def test_a_monitor_is_pruned_once_it_has_had_a_tenth_of_its_keep_in_new_rows():
    history = checkins.History(keep=100)
    history.wrote([row(1, i) for i in range(9)] + [row(2, i) for i in range(10)])
    assert history.due() == [2]  # 10 new rows: due; 9: not yet
    history.wrote([row(1, 9)])
    assert history.due() == [1] and history.due() == []
    assert checkins.History(keep=3).slack == 1  # a small history: every row counts


async def test_deleting_a_monitor_deletes_its_history(database_url):
    kept, deleted = await seed(database_url, 2)
    rows = [row(kept.id, 0), row(deleted.id, 0), row(deleted.id, 1)]
    assert await with_conn(database_url, lambda c: checkins.write(c, rows, 5.0)) == 3
    await execute(database_url, "DELETE FROM monitors WHERE id = $1", deleted.id)
    left = await fetch(database_url, "SELECT monitor_id FROM pings")
    assert [r["monitor_id"] for r in left] == [kept.id]


# -- the fast path's check-ins: a native log written with binary COPY ---------------------

COLUMNS = ("monitor_id", "extract(epoch FROM received_at) AS at", "kind", "exit_status",
           "rid", "method", "client_addr", "user_agent", "body", "body_bytes")  # fmt: skip


def logged(log: CheckinLog, check_ins: list[Row], forwarded: dict[int, bytes]) -> None:
    """Record `check_ins` in `log` as the fast path would: a connection each (its peer
    the row's client), the i-th with X-Forwarded-For forwarded[i] through a proxy."""
    for i, r in enumerate(check_ins):
        agent = r.user_agent.encode("latin-1") if r.user_agent is not None else None
        log.record(r.monitor_id, r.at, r.kind, r.status, r.method, agent, forwarded.get(i))
        if i in forwarded:
            log.assign("127.0.0.1", True, checkins._forwarded_source)
        else:
            log.assign(r.client, False, None)


async def test_the_native_log_writes_what_the_rows_would(database_url):
    a, b, gone = await seed(database_url, 3)
    table = DeadlineTable()
    for m in (a, b):  # `gone` is deleted after its check-ins were answered
        table.upsert(m.id, bytes([m.id % 256]) * 32, 60, 0, 1, False, T)
    ipv6 = "2001:db8::7"
    check_ins = [
        row(a.id, 0, kind="start", user_agent="cron/1"),
        row(a.id, 0.123456, kind="success", status=0, user_agent="cron/1"),  # µs kept
        row(b.id, 1, kind="fail", status=255, method="HEAD", client=ipv6, user_agent=None),
        row(b.id, 2, kind="log", user_agent="x" * 500, client="198.51.100.7"),  # by proxy
        row(a.id, 3, kind="fail", status=3, client=None, user_agent="é-agent"),
        row(b.id, 4, kind="success", user_agent="cron/1"),
    ]
    forwarded = {3: b"203.0.113.9, 198.51.100.7"}  # the proxy appended the last one
    log = CheckinLog()
    logged(log, [*check_ins, row(gone.id, 5)], forwarded)
    await execute(database_url, "DELETE FROM monitors WHERE id = $1", gone.id)
    taken = log.take()
    assert len(log) == 0 and len(taken) == 7 and log.counts["fail"] == 2
    assert await with_conn(database_url, lambda c: checkins.copy(c, taken, table, 5.0)) == 6
    # Inserted by monitor (the per-monitor index's leaves in order), each monitor's rows
    # as they were answered (a stable order: a.id's two rows share a second).
    order = await fetch(database_url, "SELECT monitor_id, kind FROM pings ORDER BY id")
    assert [(r["monitor_id"], r["kind"]) for r in order] == sorted(
        [(r.monitor_id, r.kind) for r in check_ins], key=lambda mk: mk[0]
    )
    copied = await fetch(
        database_url, f"SELECT {', '.join(COLUMNS)} FROM pings ORDER BY received_at, kind"
    )
    await execute(database_url, "DELETE FROM pings")
    # The same check-ins through the slow path's INSERT: the same rows, field by field.
    assert await with_conn(database_url, lambda c: checkins.write(c, check_ins, 5.0)) == 6
    inserted = await fetch(
        database_url, f"SELECT {', '.join(COLUMNS)} FROM pings ORDER BY received_at, kind"
    )
    assert [dict(r) for r in copied] == [dict(r) for r in inserted]
    assert str(copied[2]["client_addr"]) == ipv6 and copied[2]["exit_status"] == 255
    assert str(copied[3]["client_addr"]) == "198.51.100.7"  # the proxy's, not the peer


def test_a_log_interns_headers_and_hands_its_rows_over_whole():
    log = CheckinLog(limit=3)
    for i in range(4):
        log.record(1, T + i, "start", -1, "POST", b"cron" if i < 3 else b"curl", None)
    log.assign("203.0.113.7", False, None)
    assert (len(log), log.dropped, log.counts["start"]) == (3, 1, 4)  # past the limit
    assert log.agents == ["cron"] and log.clients == ["203.0.113.7"]
    taken = log.take()
    assert taken.rows()[2] == (1, T + 2, "start", -1, "POST", "203.0.113.7", "cron")
    assert (len(log), log.agents, log.clients) == (0, [], [])  # interning starts afresh
    log.record(2, T, "log", -1, "HEAD", None, None)
    assert log.unassigned == 1  # taken before its connection named it: no client
    assert log.take().rows() == [(2, T, "log", -1, "HEAD", None, None)]


def test_logs_given_back_wait_in_order_and_the_oldest_go_past_the_cap(monkeypatch):
    monkeypatch.setattr(checkins, "MAX_ROWS", 5)
    history = checkins.History()
    for batch in range(3):
        for i in range(2):
            history.native.record(batch, T + i, "start", -1, "POST")
        history.native.assign(None, False, None)
        history.give_back(history.take())
    # Six rows waited in three logs; the cap of five dropped the oldest log whole.
    assert (len(history), history.dropped) == (4, 2)
    assert [r.monitor_id for r in history.take().all_rows()] == [1, 2, 1, 2]


@contextmanager
def table_locked(dsn: str, table: str) -> Iterator[None]:
    """`table` locked (ACCESS EXCLUSIVE) by another connection, in a thread of its own,
    until the block ends."""
    locked, release = threading.Event(), threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, 30)
        finally:
            await conn.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),))
    holder.start()
    try:
        assert locked.wait(10)
        yield
    finally:
        release.set()
        holder.join()


async def test_check_ins_wait_out_a_stuck_database_and_are_written_after(database_url):
    """Both paths' rows (the fast path's COPY, the slow path's INSERT) are kept while a
    write fails, here on a lock held past the statement timeout, and written once the
    database answers again: none lost, none twice."""
    (m,) = await seed(database_url, 1)
    async with running(database_url, db_timeout=0.5) as ingest:
        with table_locked(database_url, "pings"):
            for suffix, body in [("/start", b""), ("/0", b""), ("/fail", b"disk full\n")]:
                request = (f"POST /api/v1/heartbeats/{m.token}{suffix} HTTP/1.1\r\nHost: t\r\n"
                           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
                assert b" 204 " in await http(ingest.port, request.encode() + body)
            with trio.fail_after(10):
                while not (await metrics(ingest.admin_port)).get("ping_history_failures_total"):
                    await trio.sleep(0.1)
            assert len(ingest.history) == 3  # all three wait
        with trio.fail_after(10):
            while len(await fetch(database_url, "SELECT 1 FROM pings")) < 3:
                await trio.sleep(0.1)
        await trio.sleep(1.0)  # another write round or two: nothing more arrives
    rows = await fetch(database_url, "SELECT kind, body FROM pings ORDER BY received_at, id")
    assert [(r["kind"], r["body"]) for r in rows] == [
        ("start", None), ("success", None), ("fail", b"disk full\n"),
    ]  # fmt: skip
