-- Version 8: dashboard sessions end when the user signs out, and after SESSION_HOURS
-- (control/dashboard.py) whatever the token's own lifetime. The cookie carries the
-- session's id (sealed with the token); this table says whether it is still open.
-- (lastseen_app gets the table through the default privileges of version 4.)
CREATE TABLE dashboard_sessions (
    id          uuid PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
