-- Version 15: periods beyond an hour (issue 12). `intervalSec` stays one of the hosted
-- service's values (30 s to 1 h); `periodSec`, our extension, is any whole number of
-- seconds from 60 to 365 days, for weekly, monthly and yearly jobs. Both are this column.
ALTER TABLE monitors DROP CONSTRAINT monitors_interval_sec_check;
ALTER TABLE monitors ADD CONSTRAINT monitors_interval_sec_check
    CHECK (interval_sec BETWEEN 30 AND 31536000);
