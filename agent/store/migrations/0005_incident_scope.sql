-- Which medic an incident belongs to, so several medics can share one database.
-- The value is the medic's identity: its scope (a compose project, or the label
-- scope) and the ID of the Docker engine it watches, e.g.
-- 'project=shop@ENGINE-ID' or 'label=medic.enable@ENGINE-ID'. A medic reads,
-- resumes and resolves only incidents of its own scope. Rows written before
-- this column existed keep NULL: no medic resumes them (see docs/incidents.md).

ALTER TABLE incidents ADD COLUMN scope text;

-- A medic's start-up and every poll: its own active incidents.
CREATE INDEX incidents_scope_active ON incidents (scope, opened_at DESC)
    WHERE status <> 'resolved';

-- One active incident per container and failure episode, now within one medic's
-- scope: two medics never block or close each other's incidents.
DROP INDEX incidents_one_active;
CREATE UNIQUE INDEX incidents_one_active
    ON incidents (coalesce(scope, ''), container_id)
    WHERE status IN ('open', 'healing', 'escalated');
