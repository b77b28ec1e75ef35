-- Version 2: personal access tokens and the append-only audit log.

CREATE TABLE access_tokens (
    id            bigserial PRIMARY KEY,
    org_id        bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes        text[] NOT NULL,
    -- HMAC-SHA256 of the token under the keyring's pat_key: never the token.
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    token_hint    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE INDEX access_tokens_user ON access_tokens (user_id, id);

CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    org_id          bigint NOT NULL,
    action          text NOT NULL,
    outcome         text NOT NULL DEFAULT 'allowed' CHECK (outcome IN ('allowed', 'denied')),
    actor_user_id   bigint,
    actor_token_id  bigint,
    target_type     text,
    target_id       bigint,
    ip              inet,
    user_agent      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_org ON audit_log (org_id, id);

-- Append-only, for everyone: rows can be added, never changed or removed.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
