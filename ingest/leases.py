"""Shard leases in PostgreSQL: which ingest process owns which shard, without any
consensus code of ours (migration 0009, ``core/shards.py``).

A lease is a row (owner, epoch) per shard, alive while its owner is: an owner says it is
there on every step (``ingest_members``: ``seen_at``, and ``expires_at``, a lease's time
later), and a shard whose owner's ``expires_at`` has passed is expired; times are the
database's. (Renewing a row per shard instead wrote about 100 KB/s of WAL per cluster,
more than the pings after the database diet; now a step writes one row per owner.
``shard_leases.expires_at`` is only the first expiry, set when a shard is taken.)

An owner is named by the address of its admin listener (unique while it runs; the same
after a restart, so a restarted process takes its own shards back at once). It takes
free or expired shards, and its own, with ``acquire`` (each taken shard's epoch goes up
by one), keeps them alive and checks it still holds them under the epoch it took them
with in ``renew`` (expiry only lets another owner take a shard, and until one does the
lease is still its own), hands them back with ``release`` (a graceful move: another
owner may take them at once), and fences every
write with ``fence``: inside the writing transaction, it locks its lease rows (FOR
SHARE) and checks they are still its own under the same epochs, else raises ``Fenced``
and the transaction rolls back. A taker's UPDATE waits for that lock, so a process that
was paused or partitioned past its lease can never write once another owns the shard,
and an owner cannot lose a shard in the middle of a write.

After the whole cluster was silent for a lease's time (no member stepped: PostgreSQL was
down, or the network to it), the first step opens a grace (``lease_grace``, migration
0010) of one lease's time in which expired leases are not taken: every owner renews its
own first, and ownership resumes under the same epochs.

Every owner says it is there (``ingest_members``, on each ``step``); ``fair_share`` is
how many shards it should hold: all of them divided by the members seen within a lease's
time (rounded up). ``step``, run every third of a lease, does the rest: renew, release
the excess when others have joined (they take it at their next step), take free or
expired shards up to the share. So a host that joins gets about 1/N of the shards, and
a host that dies has its shards taken once its leases expire; ``leave`` hands everything
back at once.
"""

from __future__ import annotations

import math

import asyncpg

from core.shards import SHARDS

LEASE_SECONDS = 8.0  # the default of LASTSEEN_LEASE_SECONDS

Held = dict[int, int]  # shard -> the epoch it is held under


class Fenced(Exception):
    """A write under leases this owner no longer holds: nothing was written."""

    def __init__(self, lost: list[int]) -> None:
        super().__init__(f"{len(lost)} shard(s) no longer held: {lost[:8]}")
        self.lost = lost


_ACQUIRE = """
WITH free AS (
    SELECT shard FROM shard_leases
    WHERE NOT (shard = ANY($4::smallint[]))
      AND (owner IS NULL OR owner = $1
           OR (NOT EXISTS (SELECT 1 FROM ingest_members m
                           WHERE m.owner = shard_leases.owner AND m.expires_at > now())
               AND now() >= (SELECT until FROM lease_grace)))
    ORDER BY owner = $1 DESC, shard
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE shard_leases l
SET owner = $1, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => $3)
FROM free WHERE l.shard = free.shard
RETURNING l.shard, l.epoch
"""
# Kept alive by the owner's step (``here``); this only reads which are still its own.
_RENEW = """
SELECT l.shard, l.epoch FROM shard_leases l
JOIN unnest($2::smallint[], $3::bigint[]) AS h(shard, epoch) ON h.shard = l.shard
WHERE l.owner = $1 AND l.epoch = h.epoch
"""
_RELEASE = """
UPDATE shard_leases SET owner = NULL, expires_at = '-infinity'
WHERE owner = $1 AND shard = ANY($2::smallint[])
"""
_FENCE = """
SELECT l.shard FROM shard_leases l
JOIN unnest($2::smallint[], $3::bigint[]) AS h(shard, epoch) ON h.shard = l.shard
WHERE l.owner = $1 AND l.epoch = h.epoch
FOR SHARE OF l
"""
_LIVE_MEMBERS = """
SELECT count(*) FROM ingest_members WHERE seen_at > now() - make_interval(secs => $1)
"""
_GRACE = """
UPDATE lease_grace SET until = now() + make_interval(secs => $1)
WHERE NOT EXISTS (
    SELECT 1 FROM ingest_members WHERE seen_at > now() - make_interval(secs => $1)
) AND EXISTS (SELECT 1 FROM shard_leases WHERE owner IS NOT NULL)
"""
_OWNERS = "SELECT shard, owner FROM shard_leases WHERE owner IS NOT NULL"
_HERE = """
INSERT INTO ingest_members (owner, seen_at, expires_at)
VALUES ($1, now(), now() + make_interval(secs => $2))
ON CONFLICT (owner) DO UPDATE SET seen_at = now(), expires_at = EXCLUDED.expires_at
"""


class Leases:
    """One owner's view of its leases (`owner`: a name unique to the process)."""

    def __init__(self, owner: str, *, ttl: float = LEASE_SECONDS) -> None:
        self.owner = owner
        self.ttl = ttl
        self.held: Held = {}

    async def acquire(self, conn: asyncpg.Connection, want: int) -> Held:
        """Take free or expired shards until this owner holds `want`; the ones taken."""
        missing = want - len(self.held)
        if missing <= 0:
            return {}
        await conn.execute(_HERE, self.owner, self.ttl)  # a lease lives while its owner does
        rows = await conn.fetch(_ACQUIRE, self.owner, missing, self.ttl, sorted(self.held))
        taken = {r["shard"]: r["epoch"] for r in rows}
        self.held.update(taken)
        return taken

    async def renew(self, conn: asyncpg.Connection) -> list[int]:
        """Keep every lease of this owner alive (one row: its membership), and return the
        shards lost (taken by another owner meanwhile), which are no longer its own."""
        # What is held, read before any await: a fenced write may let shards go meanwhile.
        shards = sorted(self.held)
        epochs = [self.held[s] for s in shards]
        await conn.execute(_HERE, self.owner, self.ttl)  # alive: every lease with it
        rows = await conn.fetch(_RENEW, self.owner, shards, epochs)
        kept = {r["shard"] for r in rows}
        lost = [s for s in shards if s not in kept]
        for shard in lost:
            # A fenced write may have let it go meanwhile (the process awaited the renew).
            self.held.pop(shard, None)
        return lost

    async def release(self, conn: asyncpg.Connection, shards: list[int]) -> None:
        """Hand `shards` back now (a graceful move: another owner may take them at once)."""
        await conn.execute(_RELEASE, self.owner, shards)
        for shard in shards:
            self.held.pop(shard, None)

    async def fence(self, conn: asyncpg.Connection, shards: list[int] | None = None) -> None:
        """Inside a write's transaction: lock `shards` (default: all held) as this owner's
        under their epochs until the transaction ends, or raise Fenced (roll back)."""
        wanted = sorted(self.held if shards is None else shards)
        if any(s not in self.held for s in wanted):
            raise Fenced([s for s in wanted if s not in self.held])
        rows = await conn.fetch(_FENCE, self.owner, wanted, [self.held[s] for s in wanted])
        ok = {r["shard"] for r in rows}
        if len(ok) != len(wanted):
            raise Fenced([s for s in wanted if s not in ok])

    async def fair_share(self, conn: asyncpg.Connection) -> int:
        """All shards divided by the members seen within a lease's time, rounded up."""
        live: int = await conn.fetchval(_LIVE_MEMBERS, self.ttl)
        return math.ceil(SHARDS / max(1, live))

    async def here(self, conn: asyncpg.Connection) -> None:
        """Say this owner is here (opening the grace if the whole cluster was silent)."""
        await conn.execute(_GRACE, self.ttl)
        await conn.execute(_HERE, self.owner, self.ttl)

    @staticmethod
    async def owners(conn: asyncpg.Connection) -> dict[int, str]:
        """Every owned shard's owner."""
        return {r["shard"]: r["owner"] for r in await conn.fetch(_OWNERS)}

    async def step(self, conn: asyncpg.Connection) -> tuple[Held, list[int], list[int]]:
        """Say this owner is here, renew, give back the excess, take up to the share:
        (shards taken, shards lost, shards released)."""
        await self.here(conn)
        lost = await self.renew(conn)
        share = await self.fair_share(conn)
        released = self.excess(share)
        if released:
            await self.release(conn, released)
        taken = await self.acquire(conn, share)
        return taken, lost, released

    async def leave(self, conn: asyncpg.Connection) -> None:
        """A graceful stop: hand every shard back and stop counting as a member."""
        await self.release(conn, sorted(self.held))
        await conn.execute("DELETE FROM ingest_members WHERE owner = $1", self.owner)

    def excess(self, share: int) -> list[int]:
        """The shards to release to get down to `share` (the highest first)."""
        return sorted(self.held)[share:] if len(self.held) > share else []
