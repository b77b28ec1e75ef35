-- Version 5: public status pages and their email subscribers.

CREATE TABLE status_pages (
    id          bigserial PRIMARY KEY,
    org_id      bigint NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    public      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX status_pages_org ON status_pages (org_id, id);

CREATE TABLE status_page_monitors (
    page_id     bigint NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    monitor_id  bigint NOT NULL REFERENCES monitors (id) ON DELETE CASCADE,
    position    integer NOT NULL,
    PRIMARY KEY (page_id, monitor_id)
);

CREATE INDEX status_page_monitors_monitor ON status_page_monitors (monitor_id);

-- Double opt-in: an address gets nothing but its confirmation mail until confirmed_at.
-- Unsubscribing deletes the row (and, by cascade, anything still queued for it).
CREATE TABLE subscribers (
    id            bigserial PRIMARY KEY,
    page_id       bigint NOT NULL REFERENCES status_pages (id) ON DELETE CASCADE,
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    created_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    UNIQUE (page_id, email)
);

ALTER TABLE notifications
    ADD COLUMN subscriber_id bigint REFERENCES subscribers (id) ON DELETE CASCADE;
ALTER TABLE notifications DROP CONSTRAINT notifications_kind_check;
ALTER TABLE notifications
    ADD CONSTRAINT notifications_kind_check CHECK (kind IN ('alert', 'recovery', 'test', 'confirm'));
-- lastseen_app gets these tables through the default privileges of version 4.
