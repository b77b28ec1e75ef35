-- Version 3: alert channels, incidents, and the notification outbox.
--
-- The alert worker turns the ingest's events (monitor_events) into incidents and one
-- notification row per (incident, channel, kind); deliveries are claimed from the outbox
-- with FOR UPDATE SKIP LOCKED under a lease, so several workers can run and a killed
-- one's rows come back when the lease runs out.

CREATE TABLE channels (
    id               bigserial PRIMARY KEY,
    org_id           bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    type             text NOT NULL
                     CHECK (type IN ('email', 'webhook', 'slack', 'discord', 'teams', 'telegram')),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- What may be shown (an email address, a chat id); never a secret.
    config           jsonb NOT NULL DEFAULT '{}',
    -- AEAD envelope of the secret part (webhook URLs, bot tokens, signing secrets), JSON.
    secret_envelope  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX channels_org ON channels (org_id, id);

CREATE TABLE monitor_channels (
    monitor_id  bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    channel_id  bigint NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    PRIMARY KEY (monitor_id, channel_id)
);

CREATE INDEX monitor_channels_channel ON monitor_channels (channel_id);

CREATE TABLE incidents (
    id            bigserial PRIMARY KEY,
    org_id        bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    monitor_id    bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    -- The deadline that was missed (the ingest's time), and the ping that ended it.
    opened_at     timestamptz NOT NULL,
    resolved_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);

-- At most one open incident per monitor.
CREATE UNIQUE INDEX incidents_one_open ON incidents (monitor_id) WHERE resolved_at IS NULL;
CREATE INDEX incidents_org ON incidents (org_id, id);
CREATE INDEX incidents_monitor ON incidents (monitor_id, id);

CREATE TABLE notifications (
    id               bigserial PRIMARY KEY,
    org_id           bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    monitor_id       bigint REFERENCES monitors (id) ON DELETE CASCADE,
    incident_id      bigint REFERENCES incidents (id) ON DELETE CASCADE,
    -- NULL: the monitor's own alertEmail (address holds it).
    channel_id       bigint REFERENCES channels (id) ON DELETE CASCADE,
    channel_type     text NOT NULL,
    address          text,
    -- Who is told: 'channel:<id>' or 'email:<address>'; one row per (incident, ref, kind).
    -- Also the key of the per-receiver rate limit (delivery_pacing).
    channel_ref      text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('alert', 'recovery', 'test')),
    -- Sent on every attempt, so a receiver can drop a repeat.
    idempotency_key  uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'delivered', 'failed', 'expired')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    claim            uuid,
    claimed_until    timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL,
    delivered_at     timestamptz,
    finished_at      timestamptz
);

CREATE UNIQUE INDEX notifications_once ON notifications (incident_id, channel_ref, kind)
    WHERE incident_id IS NOT NULL;
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
CREATE INDEX notifications_incident ON notifications (incident_id) WHERE incident_id IS NOT NULL;

-- When each receiver may next be sent to (its rate limit, and any Retry-After it gave).
CREATE TABLE delivery_pacing (
    channel_ref  text PRIMARY KEY,
    next_at      timestamptz NOT NULL
);
