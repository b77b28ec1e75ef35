"""The database diet: a ping that changes only a last-seen time goes to the seen log
(one compact row per interval), not to a row update; loads and takeovers read it back;
full sections let the superseded rows go; a lost shard's times are never written."""

from __future__ import annotations

import pytest
import trio

from core import DeadlineTable, seenlog
from core.shards import SHARDS
from core.tokens import digest
from ingest import service, store
from ingest.seen import SeenWriter

from ..support.dbhelp import fetch, last_seen, ping, running, seed, with_conn


def _to_the_ms(persisted: float, heard: float) -> bool:
    """The seen log keeps a ping's time floored to the millisecond: never later, less than
    1 ms earlier. Compared with a microsecond of slack: at 1.8e9 s a double steps by 0.24
    µs, so `heard - 0.001` can round onto the persisted time itself (a make test run had
    .0839999 stored as .083 and the strict bound refuse it)."""
    return -1e-6 <= heard - persisted < 0.001 + 1e-6


async def _row_versions(dsn: str) -> dict[int, str]:
    """Each monitor_state row's xmin: an UPDATE, HOT or not, makes a new version."""
    rows = await fetch(dsn, "SELECT monitor_id, xmin::text FROM monitor_state")
    return {r[0]: r[1] for r in rows}


# A large row is made in a thread (ingest/seen.py, build): both ways write the same.
BOTH_WAYS = pytest.mark.parametrize("inline", [service.SEEN_ROW_INLINE, 0],
                                    ids=["on the loop", "in a thread"])  # fmt: skip


@BOTH_WAYS
async def test_pings_of_up_monitors_update_no_row_and_reach_the_seen_log(
    database_url, monkeypatch, inline
):
    monkeypatch.setattr(service, "SEEN_ROW_INLINE", inline)
    monitors = await seed(database_url, 40)
    async with running(database_url, flush_interval=3600, seen_interval=3600) as ingest:
        for m in monitors:
            assert await ping(ingest.port, m.token) == 204
        assert await ingest.flush_once()  # pending -> up: state rows, as ever
        before = await last_seen(database_url)
        assert all(at > 0 for at in before.values())
        versions = await _row_versions(database_url)
        for _ in range(3):
            for m in monitors:
                assert await ping(ingest.port, m.token) == 204
            assert await ingest.flush_once()
        # Marked in the table, owed to the seen log's next row; no Python object per ping.
        assert ingest.seen.rows == 0 and ingest.table.dirty_count == len(monitors)
        assert ingest.seen.waiting == len(monitors)  # the gauge lastseen_seen_log_waiting
        assert await last_seen(database_url) == before  # not written yet: up to 10 s stale
        assert await ingest.flush_once(all_seen=True)
        assert ingest.seen.rows == 1 and ingest.seen.entries == len(monitors)
        assert await _row_versions(database_url) == versions
        persisted = await last_seen(database_url)
        for m in monitors:
            heard = ingest.table.get(m.id)["last_seen"]
            assert heard > before[m.id]
            assert _to_the_ms(persisted[m.id], heard)
    # A restart loads the seen log's times, not monitor_state's older ones.
    async with running(database_url, seen_interval=3600) as again:
        for m in monitors:
            assert again.table.get(m.id)["last_seen"] == persisted[m.id]
            assert again.table.get(m.id)["state"] == "up"
        # A takeover (the shards of another process) reads them the same way.
        shards = sorted(set(again.table.shards([m.id for m in monitors])))
        rows = await with_conn(database_url, lambda c: store.monitors_in_shards(c, shards, 5.0))
        assert {r.id: r.last_seen for r in rows} == persisted


@BOTH_WAYS
async def test_full_sections_let_superseded_rows_go(database_url, monkeypatch, inline):
    monkeypatch.setattr(service, "SEEN_ROW_INLINE", inline)
    monitors = await seed(database_url, 30)
    async with running(database_url, flush_interval=3600, seen_interval=0.05) as ingest:
        ingest.seen.full_every = 0.2  # a round of full sections every 4 rows
        for _ in range(12):
            for m in monitors:
                assert await ping(ingest.port, m.token) == 204
            await trio.sleep(0.06)
            ingest._next_seen_prune = 0.0  # prune after every full section
            assert await ingest.flush_once()
        assert ingest.seen.rows >= 8
        assert ingest.seen.pruned > 0
        [count] = await fetch(database_url, "SELECT count(*) FROM seen_log")
        assert count[0] < ingest.seen.rows
        # What is left still says when each monitor was last seen.
        await ingest.flush_once(all_seen=True)
        persisted = await last_seen(database_url)
        for m in monitors:
            heard = ingest.table.get(m.id)["last_seen"]
            assert _to_the_ms(persisted[m.id], heard)
        # Every shard has a full section left: the next prune has a floor to go by.
        [row] = await fetch(
            database_url,
            "SELECT count(DISTINCT o.shard) FROM seen_log l,"
            " unnest(l.shards, l.fulls) AS o(shard, full_) WHERE o.full_",
        )
        assert row[0] == SHARDS


def _entries(row) -> dict[int, float]:
    out: dict[int, float] = {}
    for start, length in zip(row.starts, row.lens, strict=True):
        if length:
            ids, times = seenlog.decode(row.data[start : start + length], row.base_ms)
            out.update(zip(ids, times, strict=True))
    return out


def test_a_lost_shard_has_nothing_written_and_a_failed_row_waits_again():
    table = DeadlineTable()
    digests = [digest(f"{i:064x}") for i in range(40)]
    for n, d in enumerate(digests, 1):
        table.upsert(n, d, 30, 0, 1, False, 1000.0, "up", 0, 999.0, False)
    for n, d in enumerate(digests, 1):
        table.ping(d, 1001.0 + n / 100)
    dirty = table.take_dirty(keep_seen=True)
    assert dirty.seen_ids == [] and table.dirty_count == 40  # kept for the seen log
    writer = SeenWriter(10.0, full_every=1e9)
    ids = list(range(1, 41))
    shards = table.shards(ids)
    lost = shards[0]
    held = set(range(SHARDS)) - {lost}
    row, taken = writer.row(table, held, 1010.0, force=True)
    assert row is not None and lost not in row.shards
    assert writer.dropped == shards.count(lost)
    # One full section per row at least (the rotation's first shard), the rest deltas.
    assert [s for s, full in zip(row.shards, row.fulls, strict=True) if full] == [min(held)]
    written = _entries(row)
    assert sorted(written) == sorted(i for i, s in zip(ids, shards, strict=True) if s != lost)
    assert all(abs(written[i] - table.get(i)["last_seen"]) < 0.001 for i in written)
    assert table.dirty_count == 0  # taken from the table
    writer.failed(row, table, taken)
    assert sorted(taken) == ids and table.dirty_count == len(taken)  # marked again
    again, _ = writer.row(table, held, 1011.0, force=True)
    assert again is not None and _entries(again) == written
    assert min(held) in [s for s, full in zip(again.shards, again.fulls, strict=True) if full]


def test_the_first_row_comes_one_interval_after_start():
    table = DeadlineTable()
    table.upsert(1, digest("ab" * 32), 30, 0, 1, False, 0.0, "up", 0, 5.0, False)
    writer = SeenWriter(10.0)
    table.take_dirty()
    table.ping(digest("ab" * 32), 6.0)
    assert writer.row(table, range(SHARDS), 100.0)[0] is None
    assert writer.row(table, range(SHARDS), 109.0)[0] is None
    row, _ = writer.row(table, range(SHARDS), 110.0)
    assert row is not None and row.entries >= 1


def test_a_shard_let_go_gets_no_full_section_that_would_hide_its_times():
    """Given back or at a stop, a shard's monitors are foreign in the table while its
    lease is still held: its waiting times are written as a delta, never as a full
    section (an empty one would let the prune delete the rows that hold them)."""
    table = DeadlineTable()
    d = digest("cd" * 32)
    table.upsert(1, d, 30, 0, 1, False, 1000.0, "up", 0, 999.0, False)
    table.take_dirty()
    [shard] = table.shards([1])
    writer = SeenWriter(10.0, full_every=10.0 * SHARDS)  # one shard in full per row
    writer.row(table, range(SHARDS), 1005.0, force=True)  # the rotation begins
    writer._round = [shard]  # and the shard is next in it
    table.ping(d, 1001.0)
    table.release([shard])  # a graceful move: the lease is still held while it writes
    row, _ = writer.row(table, range(SHARDS), 1010.0, force=True)
    assert row is not None
    sections = dict(zip(row.shards, row.fulls, strict=True))
    assert sections[shard] is False  # its time, as a delta: no full section for it
    assert _entries(row) == {1: 1001.0}
