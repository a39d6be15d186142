-- Fix branches proposed from diagnoses, and refused proposals with every reason.
-- A fix row changes as a person reviews it (approved or rejected, by whom, when).

CREATE TABLE fixes (
    id               text PRIMARY KEY,
    incident_id      text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    diagnosis_id     text NOT NULL REFERENCES diagnoses (id) ON DELETE CASCADE,
    status           text NOT NULL
                     CHECK (status IN ('proposed', 'refused', 'approved', 'rejected')),
    summary          text NOT NULL,
    files            jsonb NOT NULL DEFAULT '[]',
    branch           text,
    base             text,
    base_branch      text,
    -- The fix commit (Fix.commit; "commit" is a reserved word in SQL).
    commit_id        text,
    refusal_reasons  jsonb NOT NULL DEFAULT '[]',
    -- agent.codec's verification document (built, build_log, image, command, ...).
    verification     jsonb,
    pushed_to        text,
    push_error       text,
    created_at       timestamptz NOT NULL,
    decided_at       timestamptz,
    decided_by       text,
    reason           text
);
CREATE INDEX fixes_incident ON fixes (incident_id, created_at);
CREATE INDEX fixes_created_at ON fixes (created_at DESC);
-- medic fixes (the default view): the ones waiting for a person.
CREATE INDEX fixes_open ON fixes (created_at DESC) WHERE status = 'proposed';
