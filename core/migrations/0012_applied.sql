-- Version 12: "created" means "pingable" (issues 11 and 13).
--
-- Each ingest process says which configuration it has applied: the snapshot of its last
-- load or change-feed poll, everything visible in which it has in its table. The control
-- plane, after committing a change (create, pause, resume, rotate, delete), waits a
-- bounded time until the change's transaction is visible in every live member's
-- snapshot (pg_visible_in_snapshot), so that its answer means every process answers the
-- monitor as changed. NULL: a member that has not loaded yet.
ALTER TABLE ingest_members ADD COLUMN applied pg_snapshot;
