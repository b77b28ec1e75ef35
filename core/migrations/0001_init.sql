-- lastseen schema, version 1: organisations, users, heartbeat monitors, the events outbox.
--
-- Ownership is split: the control plane writes a monitor's configuration (monitors), the
-- ingest writes what it observed (monitor_state, one narrow row per monitor, updated in
-- place every second for every monitor that pinged: kept apart so those updates stay
-- small, HOT, and never contend with an admin's edit of the monitor).
-- A configuration change stamps config_xid with the writing transaction's id and NOTIFYs
-- 'lastseen_monitors'; the ingest polls config_xid >= the xmin of its previous snapshot, so
-- a missed NOTIFY only delays a change, never loses it. Deletions leave a row in
-- monitor_deletions for the same reason.

CREATE TABLE orgs (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    plan        text NOT NULL DEFAULT 'business' CHECK (plan IN ('free', 'pro', 'business')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, email)
);

CREATE TABLE monitors (
    id               bigserial PRIMARY KEY,
    org_id           bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    url              text NOT NULL,
    type             text NOT NULL DEFAULT 'heartbeat' CHECK (type = 'heartbeat'),
    interval_sec     integer NOT NULL CHECK (interval_sec IN (30, 60, 300, 900, 1800, 3600)),
    timeout_ms       integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 1 AND 60000),
    grace_sec        integer NOT NULL DEFAULT 60 CHECK (grace_sec BETWEEN 0 AND 86400),
    alert_threshold  integer NOT NULL DEFAULT 1 CHECK (alert_threshold BETWEEN 1 AND 100),
    alert_email      text,
    paused           boolean NOT NULL DEFAULT false,
    -- BLAKE3 digest of the 64 hex characters: what the ingest looks pings up by.
    token_digest     bytea NOT NULL UNIQUE CHECK (octet_length(token_digest) = 32),
    -- AEAD envelope of the token (control plane); never the plaintext.
    token_envelope   text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    config_xid       xid8 NOT NULL DEFAULT pg_current_xact_id()
);

CREATE INDEX monitors_org_id ON monitors (org_id, id);

-- Written by the ingest only.
CREATE TABLE monitor_state (
    monitor_id       bigint PRIMARY KEY REFERENCES monitors (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'up', 'down', 'paused')),
    misses           integer NOT NULL DEFAULT 0 CHECK (misses >= 0),
    last_seen_at     timestamptz,
    incident_open    boolean NOT NULL DEFAULT false,
    state_changed_at timestamptz
) WITH (fillfactor = 50);
CREATE INDEX monitors_config_xid ON monitors (config_xid);

CREATE TABLE monitor_deletions (
    monitor_id   bigint NOT NULL,
    deleted_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    deleted_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX monitor_deletions_xid ON monitor_deletions (deleted_xid);

CREATE FUNCTION monitors_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.config_xid := pg_current_xact_id();
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER monitors_config_stamp
    BEFORE UPDATE OF token_digest, interval_sec, grace_sec, alert_threshold, paused, type
    ON monitors FOR EACH ROW EXECUTE FUNCTION monitors_config_changed();

CREATE FUNCTION monitors_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO monitor_deletions (monitor_id) VALUES (OLD.id);
        PERFORM pg_notify('lastseen_monitors', OLD.id::text);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('lastseen_monitors', NEW.id::text);
    RETURN NEW;
END $$;

CREATE TRIGGER monitors_notify_insert AFTER INSERT ON monitors
    FOR EACH ROW EXECUTE FUNCTION monitors_notify();

CREATE FUNCTION monitors_create_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO monitor_state (monitor_id) SELECT id FROM new_monitors;
    RETURN NULL;
END $$;

CREATE TRIGGER monitors_state_insert AFTER INSERT ON monitors
    REFERENCING NEW TABLE AS new_monitors
    FOR EACH STATEMENT EXECUTE FUNCTION monitors_create_state();
CREATE TRIGGER monitors_notify_update
    AFTER UPDATE OF token_digest, interval_sec, grace_sec, alert_threshold, paused, type
    ON monitors FOR EACH ROW EXECUTE FUNCTION monitors_notify();
CREATE TRIGGER monitors_notify_delete AFTER DELETE ON monitors
    FOR EACH ROW EXECUTE FUNCTION monitors_notify();

-- The outbox of what the ingest observed, consumed by the alert worker.
-- No foreign key: an event outlives the deletion of its monitor, and a flush must never
-- fail because a monitor was deleted a moment earlier.
CREATE TABLE monitor_events (
    id            bigserial PRIMARY KEY,
    monitor_id    bigint NOT NULL,
    kind          text NOT NULL
                  CHECK (kind IN ('up', 'down', 'incident_opened', 'recovered', 'incident_resolved')),
    occurred_at   timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz
);

CREATE INDEX monitor_events_unprocessed ON monitor_events (id) WHERE processed_at IS NULL;
-- A flush whose commit was not acknowledged is retried: the same event must not land twice.
CREATE UNIQUE INDEX monitor_events_once ON monitor_events (monitor_id, kind, occurred_at);
CREATE INDEX monitor_events_monitor ON monitor_events (monitor_id, id);
