-- Version 4: the application's database role, which may append to the audit log but never
-- change or remove an entry (the trigger of version 2 also refuses it, for everyone).
--
-- The control plane and the alert worker SET ROLE lastseen_app on every connection they
-- use (core/dbrole.py). The role is created when the migrating user may create roles (the
-- embedded PostgreSQL, a superuser); otherwise an operator creates it, grants it to the
-- application's login, and reruns the migrations (until then the processes run as the
-- login, and only the trigger guards the audit log).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lastseen_app') THEN
        IF NOT (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            RAISE NOTICE 'lastseen_app not created: % may not create roles', current_user;
            RETURN;
        END IF;
        CREATE ROLE lastseen_app NOLOGIN;
    END IF;
    IF NOT pg_has_role(current_user, 'lastseen_app', 'MEMBER') THEN
        EXECUTE format('GRANT lastseen_app TO %I', current_user);
    END IF;
    GRANT USAGE ON SCHEMA public TO lastseen_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO lastseen_app;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO lastseen_app;
    REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM lastseen_app;
    REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM lastseen_app;
    -- Tables of later migrations are the application's too, unless a migration says not.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO lastseen_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO lastseen_app;
END $$;
