-- When the cause of a failure lies in another service of the compose project (an
-- upstream that is down, a dependency that cannot be reached, a one-shot job that
-- failed), the diagnosis names that service and the state it was in when diagnosed,
-- as the case file had it: 'running', 'exited (exit code 1)', 'no container'. NULL
-- when the cause lies in the incident's own service, and in rows written before this
-- migration.

ALTER TABLE diagnoses ADD COLUMN cause_service text;
ALTER TABLE diagnoses ADD COLUMN cause_state text;
