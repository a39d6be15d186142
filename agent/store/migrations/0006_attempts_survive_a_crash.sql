-- An attempt is recorded when its plan starts and completed when it ends, so a
-- medic killed in between (a crash, kill -9, an OOM kill of medic itself) leaves
-- a row that says so. 'running': started, end not recorded yet (finished_at
-- NULL); 'finished': ended and recorded; 'interrupted': a medic starting later
-- found it still running, and recorded what the engine says happened since.
-- Rows written before this migration are finished attempts.

ALTER TABLE attempts ALTER COLUMN finished_at DROP NOT NULL;
ALTER TABLE attempts ADD COLUMN status text NOT NULL DEFAULT 'finished'
    CHECK (status IN ('running', 'finished', 'interrupted'));
ALTER TABLE attempts ADD CONSTRAINT attempts_finished_at_known
    CHECK (status <> 'finished' OR finished_at IS NOT NULL);
