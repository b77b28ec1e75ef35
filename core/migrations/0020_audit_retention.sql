-- Version 20: the audit log's retention (issue 14; control/retention.py).
--
-- The log stays append-only for everyone: no UPDATE, no TRUNCATE, and no DELETE of an
-- entry younger than 365 days, whoever asks. Older entries go only through
-- prune_audit_log(), which the alert worker calls once an hour for those older than
-- LASTSEEN_RETAIN_AUDIT_DAYS (400 by default, never under 365): the function marks its
-- own transaction, and the trigger lets that transaction delete old entries and nothing
-- else.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('lastseen.audit_prune', true) = 'on'
       AND OLD.created_at < now() - interval '365 days' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE FUNCTION prune_audit_log(cutoff timestamptz, batch integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    n integer;
BEGIN
    IF cutoff > now() - interval '365 days' THEN
        RAISE EXCEPTION 'audit entries are kept at least 365 days'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('lastseen.audit_prune', 'on', true);
    DELETE FROM audit_log WHERE id IN (
        SELECT id FROM audit_log WHERE created_at < cutoff ORDER BY id LIMIT batch);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('lastseen.audit_prune', 'off', true);
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION prune_audit_log(timestamptz, integer) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lastseen_app') THEN
        GRANT EXECUTE ON FUNCTION prune_audit_log(timestamptz, integer) TO lastseen_app;
    END IF;
END $$;
