-- Version 16: a status page shows each monitor under a public name when one is given
-- (issue 17: the internal name, "db-backup-prod-eu", was public).
ALTER TABLE status_page_monitors ADD COLUMN display_name text
    CHECK (display_name IS NULL OR length(display_name) BETWEEN 1 AND 200);
