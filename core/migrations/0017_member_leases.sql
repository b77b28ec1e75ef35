-- Version 17: a shard's lease lives as long as its owner says it is there. Renewing a
-- row per shard every quarter of a lease wrote about 100 KB/s of WAL per cluster, more
-- than the pings after the seen log; now each step updates the owner's one row here,
-- until when its leases hold (its own lease time), and shard_leases.expires_at is only
-- the first expiry, set when a shard is taken.
ALTER TABLE ingest_members ADD COLUMN expires_at timestamptz NOT NULL DEFAULT '-infinity';
