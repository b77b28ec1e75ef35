-- Version 18: job check-ins (issue 12): failure signals and the ping history.
--
-- A job may say it failed (`/fail`, or a non-zero exit status `/<0-255>`): the ingest
-- records a 'failed' event with the exit status and opens the incident at once. The
-- incident says what opened it: missed deadlines ('missed') or a failure signal
-- ('failed', with the exit status when there was one).
ALTER TABLE monitor_events ADD COLUMN exit_status smallint
    CHECK (exit_status BETWEEN 0 AND 255);
ALTER TABLE monitor_events DROP CONSTRAINT monitor_events_kind_check;
ALTER TABLE monitor_events ADD CONSTRAINT monitor_events_kind_check
    CHECK (kind IN ('up', 'down', 'incident_opened', 'recovered', 'incident_resolved',
                    'incident_paused', 'failed'));

ALTER TABLE incidents ADD COLUMN cause text NOT NULL DEFAULT 'missed'
    CHECK (cause IN ('missed', 'failed'));
ALTER TABLE incidents ADD COLUMN exit_status smallint CHECK (exit_status BETWEEN 0 AND 255);

-- The check-ins a monitor received: every signal (start, success by exit status 0,
-- failure, log) and every ping that carried a body, written by the ingest process that
-- answered it, in batches off the hot path. A plain body-less success ping is not a row:
-- its time is the monitor's last ping (monitor_state and the seen log), and writing one
-- row per heartbeat is what the database diet of issue 11 removed. The newest
-- LASTSEEN_PING_HISTORY rows per monitor are kept (100 unless configured).
CREATE TABLE pings (
    id           bigserial PRIMARY KEY,
    monitor_id   bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    received_at  timestamptz NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('success', 'start', 'fail', 'log')),
    exit_status  smallint CHECK (exit_status BETWEEN 0 AND 255),
    rid          uuid,                     -- ties a start to its end (?rid=)
    method       text NOT NULL,
    client_addr  inet,
    user_agent   text,
    body         bytea,                    -- the first LASTSEEN_PING_BODY_BYTES of it
    body_bytes   integer NOT NULL DEFAULT 0 -- its whole size, truncated or not
);
CREATE INDEX pings_monitor ON pings (monitor_id, received_at DESC, id DESC);
