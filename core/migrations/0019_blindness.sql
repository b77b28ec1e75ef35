-- Version 19: blindness is not an outage (issue 13; ingest/sight.py).
--
-- When pings stop arriving for (nearly) everyone at once, the ingest declares itself
-- blind: the misses of that moment make monitors 'unknown' instead of 'down', and no
-- incident opens. One row here per blind period of one ingest process (its lease name);
-- the worker tells the organisations' owners and their system-alert channels once per
-- period of the cluster, and once more when pings arrive again.
ALTER TABLE monitor_state DROP CONSTRAINT monitor_state_state_check;
ALTER TABLE monitor_state ADD CONSTRAINT monitor_state_state_check
    CHECK (state IN ('pending', 'up', 'down', 'paused', 'unknown'));

CREATE TABLE blind_periods (
    id            bigserial PRIMARY KEY,
    owner         text NOT NULL,
    since         timestamptz NOT NULL,   -- the first miss it undid
    detected_at   timestamptz NOT NULL,
    late          integer NOT NULL,       -- monitors late in the window that decided it
    heard         integer NOT NULL,       -- on-time pings in that window
    back_at       timestamptz,            -- pings came back: the floor everyone is judged from
    ended_at      timestamptz,
    unknown_peak  integer NOT NULL DEFAULT 0,
    notified      boolean NOT NULL DEFAULT false,
    end_notified  boolean NOT NULL DEFAULT false
);
CREATE INDEX blind_periods_open ON blind_periods (owner) WHERE ended_at IS NULL;
CREATE INDEX blind_periods_unsent ON blind_periods (id) WHERE NOT end_notified;

-- Channels that hear of lastseen's own trouble (blindness), besides the owners' email.
ALTER TABLE channels ADD COLUMN system_alerts boolean NOT NULL DEFAULT false;

ALTER TABLE notifications ADD COLUMN blind_id bigint REFERENCES blind_periods (id)
    ON DELETE CASCADE;
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('alert', 'recovery', 'closed', 'test', 'confirm', 'blind', 'sighted'));
CREATE UNIQUE INDEX notifications_blind_once ON notifications (blind_id, channel_ref, kind)
    WHERE blind_id IS NOT NULL;
