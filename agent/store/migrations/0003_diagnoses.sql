-- Diagnoses of escalated incidents: by medic's rules and by the LLM. The case file
-- is the exact, redacted text that was read or sent, kept so a person can audit
-- what left the host. Ids are made by medic, so a spool replay writes each once.

CREATE TABLE diagnoses (
    id                           text PRIMARY KEY,
    incident_id                  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    source                       text NOT NULL CHECK (source IN ('rules', 'llm')),
    rule_id                      text,
    model                        text,
    summary                      text NOT NULL,
    root_cause                   text NOT NULL,
    confidence                   text NOT NULL CHECK (confidence IN ('low', 'medium', 'high')),
    evidence                     jsonb NOT NULL DEFAULT '[]',
    -- Evidence quotes the model gave that were not found verbatim in what it was shown.
    unverified_evidence          jsonb NOT NULL DEFAULT '[]',
    edits                        jsonb NOT NULL DEFAULT '[]',
    no_edits_reason              text,
    case_file                    text NOT NULL DEFAULT '',
    fingerprint                  text NOT NULL DEFAULT '',
    input_tokens                 integer NOT NULL DEFAULT 0,
    output_tokens                integer NOT NULL DEFAULT 0,
    cache_creation_input_tokens  integer NOT NULL DEFAULT 0,
    cache_read_input_tokens      integer NOT NULL DEFAULT 0,
    error                        text,
    reused_from                  text,
    created_at                   timestamptz NOT NULL
);
-- medic incidents show ID, medic diagnose ID.
CREATE INDEX diagnoses_incident ON diagnoses (incident_id, created_at);
-- The same failure is diagnosed once per window: the newest by fingerprint.
CREATE INDEX diagnoses_fingerprint ON diagnoses (fingerprint, created_at DESC);
-- The daily token budget sums the tokens spent since midnight UTC.
CREATE INDEX diagnoses_created_at ON diagnoses (created_at);
