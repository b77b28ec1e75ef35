"""The ping history's writes against a real PostgreSQL: rows in, newest kept, rows of a
monitor deleted meanwhile skipped, and what a row can hold."""

from __future__ import annotations

from ingest import checkins
from ingest.checkins import Row

from ..support.dbhelp import execute, fetch, seed, with_conn

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
