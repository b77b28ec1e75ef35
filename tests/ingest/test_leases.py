"""Shard leases on a real PostgreSQL (issue 11's ground): one owner per shard, takeover
with a new epoch once a lease expires, rebalancing by release, and fencing: an owner that
lost a shard writes nothing, and cannot lose it in the middle of a write."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from core.shards import SHARDS, shard_of
from ingest.leases import Fenced, Leases

from ..support.aio import run


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


async def _owners(conn: asyncpg.Connection) -> dict[int, tuple[str | None, int]]:
    rows = await conn.fetch(
        "SELECT shard, owner, epoch FROM shard_leases l WHERE owner IS NOT NULL AND EXISTS ("
        " SELECT 1 FROM ingest_members m WHERE m.owner = l.owner AND m.expires_at > now())"
    )
    return {r["shard"]: (r["owner"], r["epoch"]) for r in rows}


async def _expire(conn: asyncpg.Connection, owner: str) -> None:
    """What a paused or dead owner's leases look like once their time is up: it has not
    said it is there for longer than a lease."""
    await conn.execute(
        "UPDATE ingest_members SET seen_at = now() - interval '1 minute',"
        " expires_at = now() - interval '1 second' WHERE owner = $1",
        owner,
    )


def test_a_lone_owner_takes_every_shard_once(database_url):
    async def go():
        conn = await _connect(database_url)
        try:
            a = Leases("a")
            share = await a.fair_share(conn)
            taken = await a.acquire(conn, share)
            again = await a.acquire(conn, share)
            return share, taken, again, await _owners(conn)
        finally:
            await conn.close()

    share, taken, again, owners = run(go())
    assert share == SHARDS and len(taken) == SHARDS and again == {}
    assert set(taken.values()) == {1}
    assert {o for o, _ in owners.values()} == {"a"} and len(owners) == SHARDS


def test_owners_that_start_together_never_share_a_shard(database_url):
    async def go():
        conns = [await _connect(database_url) for _ in range(4)]
        try:
            owners = [Leases(f"o{i}") for i in range(4)]
            await asyncio.gather(*(o.acquire(c, 300) for o, c in zip(owners, conns, strict=True)))
            return [set(o.held) for o in owners], await _owners(conns[0])
        finally:
            for c in conns:
                await c.close()

    held, owners = run(go())
    assert sum(len(h) for h in held) == SHARDS == len(owners)
    for i, mine in enumerate(held):
        for other in held[i + 1 :]:
            assert not mine & other


def test_a_joining_owner_gets_its_share_as_the_other_releases_its_excess(database_url):
    async def go():
        conn = await _connect(database_url)
        try:
            a, b = Leases("a"), Leases("b")
            first, _, _ = await a.step(conn)
            nothing_free, _, _ = await b.step(conn)  # b says it is here
            _, _, released = await a.step(conn)  # a sees two members: half is its share
            taken, _, _ = await b.step(conn)
            return len(first), nothing_free, released, taken, await _owners(conn)
        finally:
            await conn.close()

    first, nothing_free, released, taken, owners = run(go())
    assert first == SHARDS and nothing_free == {}
    assert len(released) == SHARDS // 2 and sorted(taken) == released
    assert set(taken.values()) == {2}  # a new owner, a new epoch
    counts = {o: sum(1 for x, _ in owners.values() if x == o) for o in ("a", "b")}
    assert counts == {"a": SHARDS // 2, "b": SHARDS // 2}


def test_three_owners_converge_and_cover_for_one_that_dies_or_leaves(database_url):
    async def go():
        conn = await _connect(database_url)
        try:
            owners = [Leases(n) for n in ("a", "b", "c")]
            for _ in range(3):  # three rounds of steps, as the keepers would run them
                for o in owners:
                    await o.step(conn)
            shares = sorted(len(o.held) for o in owners)
            a, b, c = owners
            # c dies: its member row and its leases run out.
            await conn.execute(
                "UPDATE ingest_members SET seen_at = now() - interval '1 hour' WHERE owner = 'c'"
            )
            await _expire(conn, "c")
            dead = set(c.held)
            took_a, _, _ = await a.step(conn)
            took_b, _, _ = await b.step(conn)
            covered = (set(took_a) | set(took_b)) == dead
            # b leaves gracefully: a takes everything at its next step.
            await b.leave(conn)
            took_last, _, _ = await a.step(conn)
            return shares, covered, len(a.held), len(took_last), await _owners(conn)
        finally:
            await conn.close()

    shares, covered, a_holds, took_last, owners = run(go())
    # Each at most its share (1,024 / 3 rounded up), together all of them: 340, 342, 342.
    assert sum(shares) == SHARDS and shares[-1] <= -(-SHARDS // 3) and shares[0] >= SHARDS // 4
    assert covered
    assert a_holds == SHARDS == len(owners) and took_last > 0
    assert {o for o, _ in owners.values()} == {"a"}


def test_an_expired_owner_is_taken_over_with_a_new_epoch_and_is_fenced(database_url):
    async def go():
        conn = await _connect(database_url)
        try:
            a, b = Leases("a"), Leases("b")
            await a.acquire(conn, SHARDS)
            await a.fence(conn)  # while it holds them, its writes pass
            await _expire(conn, "a")  # a is paused past its leases
            taken = await b.acquire(conn, SHARDS)
            fenced = None
            async with conn.transaction():
                try:
                    await a.fence(conn)
                except Fenced as exc:
                    fenced = exc
            lost = await a.renew(conn)
            return taken, fenced, lost, a.held
        finally:
            await conn.close()

    taken, fenced, lost, still = run(go())
    assert len(taken) == SHARDS and set(taken.values()) == {2}
    assert fenced is not None and len(fenced.lost) == SHARDS
    assert len(lost) == SHARDS and still == {}


def test_a_takeover_waits_for_the_write_in_progress(database_url):
    """The fence locks the lease rows: a taker cannot take a shard (even an expired one)
    while its owner's write is in progress; it takes it right after, with a new epoch."""

    async def go():
        writer, taker = await _connect(database_url), await _connect(database_url)
        try:
            a, b = Leases("a", ttl=0.5), Leases("b")
            await a.acquire(writer, SHARDS)
            tx = writer.transaction()
            await tx.start()
            await a.fence(writer)
            await asyncio.sleep(0.7)  # the leases run out while the write is in progress
            during = await b.acquire(taker, SHARDS)
            await tx.commit()
            after = await b.acquire(taker, SHARDS)
            return during, after
        finally:
            await writer.close()
            await taker.close()

    during, after = run(go())
    assert during == {}  # skipped: locked by the write in progress
    assert len(after) == SHARDS and set(after.values()) == {2}


def test_the_shard_of_a_digest_is_the_databases_shard(database_url):
    async def go():
        conn = await _connect(database_url)
        try:
            org = await conn.fetchval("INSERT INTO orgs (name) VALUES ('s') RETURNING id")
            digests = [secrets.token_bytes(32) for _ in range(500)]
            digests += [bytes([0xFF, 0xFF]) + bytes(30), bytes(32), bytes([4, 0]) + bytes(30)]
            await conn.executemany(
                "INSERT INTO monitors (org_id, name, url, interval_sec, grace_sec,"
                " token_digest, token_envelope) VALUES ($1, 'm', 'u', 60, 0, $2, '{}')",
                [(org, d) for d in digests],
            )
            rows = await conn.fetch("SELECT token_digest, shard FROM monitors")
            return {bytes(r["token_digest"]): r["shard"] for r in rows}
        finally:
            await conn.close()

    shards = run(go())
    assert all(shard_of(d) == s for d, s in shards.items())
    assert shards[bytes([0xFF, 0xFF]) + bytes(30)] == 65535 % SHARDS
    assert shards[bytes([4, 0]) + bytes(30)] == 0  # 1,024 wraps to shard 0


def test_after_the_whole_cluster_was_silent_owners_resume_under_the_same_epochs(database_url):
    """PostgreSQL was away longer than a lease: every lease looks expired when it comes
    back. The first step opens a grace in which nobody takes an expired lease; each owner
    renews its own under the same epoch; once the grace is over, a dead owner's are taken."""

    async def go():
        conn = await _connect(database_url)
        try:
            a, b = Leases("a"), Leases("b")
            for o in (a, b, a, b):
                await o.step(conn)
            epochs = dict(a.held)
            # Silence: nobody stepped for a minute, every lease ran out.
            await conn.execute(
                "UPDATE ingest_members SET seen_at = now() - interval '1 minute',"
                " expires_at = now() - interval '1 second'"
            )
            took_b, _, _ = await b.step(conn)  # the first back: the grace opens
            lost_a = await a.renew(conn)
            during = dict(a.held)
            # The grace is over and a never came back: b takes a's shards, new epochs.
            await conn.execute("UPDATE lease_grace SET until = now() - interval '1 second'")
            await _expire(conn, "a")
            took_later, _, _ = await b.step(conn)
            return epochs, took_b, lost_a, during, took_later
        finally:
            await conn.close()

    epochs, took_b, lost_a, during, took_later = run(go())
    assert len(epochs) == SHARDS // 2
    assert took_b == {} and lost_a == [] and during == epochs
    assert set(took_later) == set(epochs)
    assert all(took_later[s] == epochs[s] + 1 for s in epochs)


def test_a_restarted_owner_takes_its_own_shards_back_at_once(database_url):
    """An owner is named by its admin address: the same after a restart. The new process
    takes its own (unexpired) leases at once, with new epochs, which fence the old one."""

    async def go():
        conn = await _connect(database_url)
        try:
            old = Leases("127.0.0.1:9108")
            await old.step(conn)
            new = Leases("127.0.0.1:9108")
            taken, _, _ = await new.step(conn)
            fenced = None
            async with conn.transaction():
                try:
                    await old.fence(conn)
                except Fenced as exc:
                    fenced = exc
            return dict(old.held), taken, fenced
        finally:
            await conn.close()

    old, taken, fenced = run(go())
    assert len(taken) == SHARDS and all(taken[s] == old[s] + 1 for s in old)
    assert fenced is not None and len(fenced.lost) == SHARDS


def test_a_shard_let_go_while_renew_awaits_the_database_is_no_crash(database_url):
    """A fenced flush may let shards go while a lease step awaits the database (the
    frozen-host test crashed an ingest so, once: renew read the epochs after an await)."""

    class LettingGo:
        """A connection whose first statement lets a shard go, as a fenced flush would."""

        def __init__(self, conn: asyncpg.Connection, leases: Leases) -> None:
            self.conn, self.leases = conn, leases

        async def execute(self, *args):
            self.leases.held.pop(min(self.leases.held), None)
            return await self.conn.execute(*args)

        async def fetch(self, *args):
            return await self.conn.fetch(*args)

    async def go():
        conn = await _connect(database_url)
        try:
            a = Leases("a")
            await a.acquire(conn, SHARDS)
            lost = await a.renew(LettingGo(conn, a))
            return lost, len(a.held)
        finally:
            await conn.close()

    lost, held = run(go())
    assert lost == [] and held == SHARDS - 1  # the rest renewed; nothing raised
