-- Version 9: shards and their leases, the ground of several ingest processes and hosts on
-- one database (core/shards.py, ingest/leases.py).
--
-- A monitor's shard comes from its token's digest (never the token): the first two bytes,
-- modulo 1,024. It follows the digest, so a rotated token may move its monitor.
ALTER TABLE monitors ADD COLUMN shard smallint
    GENERATED ALWAYS AS (((get_byte(token_digest, 0) << 8) | get_byte(token_digest, 1)) % 1024)
    STORED;
CREATE INDEX monitors_shard ON monitors (shard);

-- One row per shard, for ever: who owns it (NULL: nobody), under which epoch, until when.
-- A new owner takes a shard with epoch + 1; every write of an owner is fenced by its
-- epoch, so one that lost the shard (paused, partitioned) can never write again. Times
-- are the database's, so the hosts' clocks do not matter.
CREATE TABLE shard_leases (
    shard       smallint PRIMARY KEY CHECK (shard >= 0 AND shard < 1024),
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO shard_leases (shard) SELECT s FROM generate_series(0, 1023) s;

-- Who is there to own shards: each ingest process says so every few seconds; the fair
-- share of a process is all shards divided by the members seen within a lease's time.
CREATE TABLE ingest_members (
    owner    text PRIMARY KEY,
    seen_at  timestamptz NOT NULL
);
