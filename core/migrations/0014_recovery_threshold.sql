-- Version 14: flap damping (issue 13). An open incident resolves only after this many
-- pings in a row, none late (1: the first ping, as before). A monitor that pings once and
-- goes silent again stays in its one incident instead of paging twice.
ALTER TABLE monitors ADD COLUMN recovery_threshold smallint NOT NULL DEFAULT 1
    CHECK (recovery_threshold BETWEEN 1 AND 100);
