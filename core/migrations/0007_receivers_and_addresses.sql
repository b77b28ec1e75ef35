-- Version 7: a status page's subscribers are unique by address whatever its case
-- (Alice@Example.test and alice@example.test are one mailbox for every provider that
-- matters), so the per-address limit and the opt-in cannot be sidestepped by case.
-- Where such duplicates exist, the earliest confirmed (else the earliest) row stays.
DELETE FROM subscribers s
USING subscribers keep
WHERE keep.page_id = s.page_id AND lower(keep.email) = lower(s.email) AND keep.id <> s.id
  AND (keep.confirmed_at IS NOT NULL, -keep.id) > (s.confirmed_at IS NOT NULL, -s.id);

ALTER TABLE subscribers DROP CONSTRAINT subscribers_page_id_email_key;
CREATE UNIQUE INDEX subscribers_page_address ON subscribers (page_id, lower(email));

-- Where a channel delivers (the host of its URL, which is sealed with the rest of the
-- secret): the alert worker keeps a few deliveries in flight per receiver, so a receiver
-- that hangs only ever delays itself. Set by the API; filled in by the worker for
-- channels created before this version.
ALTER TABLE channels ADD COLUMN receiver text;
