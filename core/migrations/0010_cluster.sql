-- Version 10: what the ingest processes of one cluster share besides their leases
-- (ingest/leases.py, ingest/handoff.py).
--
-- The key that authenticates hand-offs between ingest processes (a ping answered by one
-- process for a monitor another owns): random, made here, read by every ingest at start.
-- Anyone who can read it could claim pings for any monitor, which is no more than anyone
-- who can write monitor_state already can.
CREATE TABLE cluster_secrets (
    name    text PRIMARY KEY,
    secret  bytea NOT NULL CHECK (length(secret) = 32)
);
INSERT INTO cluster_secrets (name, secret)
VALUES ('handoff',
        decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));

-- After the whole cluster was silent (PostgreSQL down, or the network to it), nobody may
-- take an expired lease until this time: each owner first gets a lease's time to renew
-- its own, so ownership resumes under the same epochs.
CREATE TABLE lease_grace (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    until  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO lease_grace DEFAULT VALUES;
