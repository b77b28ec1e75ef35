-- Version 13: alerts that say what happened (issue 13).
--
-- An event carries the monitor's last ping at the time (the ingest's table knows it
-- exactly), so an alert says when the last ping was and when the next was expected,
-- not only when the deadline passed. A pause closes an open incident with its own event
-- ('incident_paused'): it is not a recovery, and never told as one.
ALTER TABLE monitor_events ADD COLUMN last_seen_at timestamptz;
ALTER TABLE monitor_events DROP CONSTRAINT monitor_events_kind_check;
ALTER TABLE monitor_events ADD CONSTRAINT monitor_events_kind_check
    CHECK (kind IN ('up', 'down', 'incident_opened', 'recovered', 'incident_resolved',
                    'incident_paused'));

-- How an incident began and ended: the last ping before it, the deadline first missed,
-- and what closed it (a ping, a pause; 'delete' and 'maintenance' are reserved).
ALTER TABLE incidents ADD COLUMN last_ping_at timestamptz;
ALTER TABLE incidents ADD COLUMN expected_at timestamptz;
ALTER TABLE incidents ADD COLUMN resolved_by text
    CHECK (resolved_by IN ('ping', 'pause', 'delete', 'maintenance'));

-- 'closed': an incident closed without a recovery (paused), told to the monitor's
-- channels only, never to a status page's subscribers.
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_kind_check
    CHECK (kind IN ('alert', 'recovery', 'closed', 'test', 'confirm'));
