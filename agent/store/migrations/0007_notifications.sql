-- What medic told people about each incident, and what became of it: delivered,
-- failed (with the error), held back by the rate limit, or dropped because the
-- queue of notifications to send was full. A repeat of something already said is
-- neither sent nor recorded. Ids are made by medic, so a spool replay writes each
-- once; a record of an incident that is not stored is skipped by the insert, not
-- refused, so it never holds up the spool.

CREATE TABLE notifications (
    id           text PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    -- opened, escalated, resolved, diagnosed, fix_proposed, playbook; not checked
    -- here, so a new kind needs no migration.
    kind         text NOT NULL,
    title        text NOT NULL,
    -- When the outcome was known: the destinations answered, or it was held back
    -- or dropped.
    at           timestamptz NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('delivered', 'failed', 'held_back', 'dropped')),
    error        text,
    -- Insertion order, for records of the same moment.
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
-- An incident's timeline: medic incidents show, the review console.
CREATE INDEX notifications_incident ON notifications (incident_id, at, seq);
