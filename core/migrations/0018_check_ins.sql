-- Version 18: job check-ins (issue 12): failure signals and the ping history.
--
-- A job may say it failed (`/fail`, or a non-zero exit status `/<0-255>`): the ingest
-- records a 'failed' event with the exit status and opens the incident at once. The
-- incident says what opened it: missed deadlines ('missed'), a failure signal
-- ('failed', with the exit status when there was one) or a hung run ('timeout', below).
ALTER TABLE monitor_events ADD COLUMN exit_status smallint
    CHECK (exit_status BETWEEN 0 AND 255);
ALTER TABLE incidents ADD COLUMN cause text NOT NULL DEFAULT 'missed';
ALTER TABLE incidents ADD COLUMN exit_status smallint CHECK (exit_status BETWEEN 0 AND 255);

-- The check-ins a monitor received: every signal (start, success by exit status 0,
-- failure, log) and every ping that carried a body, written by the ingest process that
-- answered it, in batches off the hot path. A plain body-less success ping is not a row:
-- its time is the monitor's last ping (monitor_state and the seen log), and writing one
-- row per heartbeat is what the database diet of issue 11 removed. The newest
-- LASTSEEN_PING_HISTORY rows per monitor are kept (100 unless configured).
--
-- No foreign key: its check, a row lock on the monitor for every row inserted, made a
-- flood of check-ins cost half again as much (benchmarks.throughput). The writer skips
-- rows of monitors that no longer exist, and deleting a monitor deletes its rows
-- (pings_of_deleted_monitor); rows that raced a deletion outlive it unseen (the API
-- reads only a monitor's own) until retention removes them.
CREATE TABLE pings (
    id           bigserial PRIMARY KEY,
    monitor_id   bigint NOT NULL,
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

CREATE FUNCTION pings_of_deleted_monitor() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pings WHERE monitor_id = OLD.id;
    RETURN OLD;
END $$;

CREATE TRIGGER monitors_pings_deleted AFTER DELETE ON monitors
    FOR EACH ROW EXECUTE FUNCTION pings_of_deleted_monitor();

-- Runs that hang: a monitor may set maxRuntimeSec; a start with no success or failure
-- within it opens a 'timeout' incident ("running too long"). The ingest keeps the open
-- run's start in monitor_state (only for a monitor with a maxRuntimeSec: a start of one
-- without is no write), so a restart or a takeover keeps its deadline.
ALTER TABLE monitors ADD COLUMN max_runtime_sec integer
    CHECK (max_runtime_sec BETWEEN 1 AND 31536000);
ALTER TABLE monitor_state ADD COLUMN started_at timestamptz;
ALTER TABLE monitor_events DROP CONSTRAINT monitor_events_kind_check;
ALTER TABLE monitor_events ADD CONSTRAINT monitor_events_kind_check
    CHECK (kind IN ('up', 'down', 'incident_opened', 'recovered', 'incident_resolved',
                    'incident_paused', 'failed', 'timed_out'));
ALTER TABLE incidents ADD CONSTRAINT incidents_cause_check
    CHECK (cause IN ('missed', 'failed', 'timeout'));

-- Cron schedules (core/schedules.py): a monitor expects its runs at the times of a cron
-- expression read in a time zone, instead of every interval_sec (which then holds the
-- shortest gap between runs: what the plan's floor is held against, what the API shows
-- as the period).
ALTER TABLE monitors ADD COLUMN schedule text CHECK (length(schedule) BETWEEN 1 AND 200);
ALTER TABLE monitors ADD COLUMN tz text CHECK (length(tz) BETWEEN 1 AND 64);
ALTER TABLE monitors ADD CONSTRAINT monitors_tz_with_schedule
    CHECK ((schedule IS NULL) = (tz IS NULL));

-- Every column the ingest judges by stamps config_xid, so the change reaches it (version
-- 14's recovery_threshold did not: a changed recoveryThreshold waited for a restart).
DROP TRIGGER monitors_config_stamp ON monitors;
CREATE TRIGGER monitors_config_stamp
    BEFORE UPDATE OF token_digest, interval_sec, grace_sec, alert_threshold, paused, type,
                     recovery_threshold, max_runtime_sec, schedule, tz
    ON monitors FOR EACH ROW EXECUTE FUNCTION monitors_config_changed();
