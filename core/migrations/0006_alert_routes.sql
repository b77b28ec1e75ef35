-- Who is told about a monitor's incidents, besides its status pages' subscribers: each of
-- its channels, and its alertEmail. The alert worker queues one notification per row for
-- an incident; the test alert sends one message per row. One definition, so that what a
-- test alert reaches and what a real incident reaches cannot drift apart.
-- (lastseen_app reads it through the default privileges of version 4.)
CREATE VIEW monitor_alert_routes AS
SELECT mc.monitor_id, c.org_id, c.id AS channel_id, c.type AS channel_type,
       NULL::text AS address, 'channel:' || c.id AS channel_ref
FROM monitor_channels mc
JOIN channels c ON c.id = mc.channel_id
UNION ALL
SELECT m.id, m.org_id, NULL::bigint, 'email', m.alert_email, 'email:' || m.alert_email
FROM monitors m
WHERE m.alert_email IS NOT NULL AND m.alert_email <> '';
