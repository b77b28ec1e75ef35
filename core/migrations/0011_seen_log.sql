-- Version 11: last-seen times, persisted coarsely (the database diet of issue 11;
-- core/seenlog.py says how).
--
-- A ping to an up monitor no longer updates monitor_state (about 108 bytes of WAL per
-- ping). Each ingest process appends a row here every ~10 s instead: for each shard it
-- owns, a section packing the last-seen times that rose since its previous row (or, for
-- a "full" section, every monitor of the shard seen at least once). A monitor's last-seen
-- time is the latest of monitor_state.last_seen_at and its entries in its shard's
-- sections; rows older than every shard's latest full section are deleted.
CREATE TABLE seen_log (
    id          bigserial PRIMARY KEY,
    written_at  timestamptz NOT NULL DEFAULT now(),
    base_ms     bigint NOT NULL,            -- entries are milliseconds from this
    shards      smallint[] NOT NULL,        -- one element per section, in order
    fulls       boolean[] NOT NULL,         -- the section holds every seen monitor
    starts      integer[] NOT NULL,         -- byte offset of the section in data
    lens        integer[] NOT NULL,         -- its length (0: no monitor)
    data        bytea NOT NULL,
    CHECK (cardinality(shards) = cardinality(fulls)
           AND cardinality(shards) = cardinality(starts)
           AND cardinality(shards) = cardinality(lens))
);
-- The sections are compressed already; stored out of line uncompressed, a reader's
-- substring() fetches only the chunks of the sections it wants.
ALTER TABLE seen_log ALTER COLUMN data SET STORAGE EXTERNAL;
