-- Incidents, their evidence, attempts and status changes, and sampled health
-- observations. Every id is made by medic (uuid hex), never by the database,
-- so replaying the spool writes each row once (ON CONFLICT DO NOTHING).

CREATE TABLE incidents (
    id              text PRIMARY KEY,
    project         text,
    service         text,
    container_id    text NOT NULL,
    container_name  text NOT NULL,
    signal          text NOT NULL,
    status          text NOT NULL
                    CHECK (status IN ('open', 'healing', 'resolved', 'escalated')),
    summary         text NOT NULL,
    fingerprint     text NOT NULL,
    opened_at       timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    note            text
);

-- One active incident per container and signal: repeated findings add evidence.
CREATE UNIQUE INDEX incidents_one_active
    ON incidents (container_id, signal)
    WHERE status IN ('open', 'healing', 'escalated');
-- medic incidents [--all] [--since]: newest first.
CREATE INDEX incidents_opened_at ON incidents (opened_at DESC);
-- medic incidents --service S, and MTTR per service over a period.
CREATE INDEX incidents_service_opened_at ON incidents (service, opened_at DESC);
-- medic incidents (the default, active view) and the supervisor's start-up.
CREATE INDEX incidents_active ON incidents (opened_at DESC) WHERE status <> 'resolved';

CREATE TABLE incident_evidence (
    id           text PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    observed_at  timestamptz NOT NULL,
    summary      text NOT NULL,
    evidence     jsonb NOT NULL DEFAULT '{}',
    -- Insertion order, for entries observed at the same moment.
    seq          bigint GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX incident_evidence_incident ON incident_evidence (incident_id, observed_at);

CREATE TABLE attempts (
    id           text PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    playbook     text NOT NULL,
    action       text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    ok           boolean NOT NULL,
    error        text,
    output       text NOT NULL DEFAULT ''
);
CREATE INDEX attempts_incident ON attempts (incident_id, started_at);

CREATE TABLE incident_status_changes (
    id           text PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    status       text NOT NULL
                 CHECK (status IN ('open', 'healing', 'resolved', 'escalated')),
    at           timestamptz NOT NULL,
    note         text
);
CREATE INDEX incident_status_changes_incident ON incident_status_changes (incident_id, at);

CREATE TABLE observations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    container_id    text NOT NULL,
    container_name  text NOT NULL,
    project         text,
    service         text,
    state           text NOT NULL,
    health          text NOT NULL,
    restart_count   integer NOT NULL,
    exit_code       integer,
    observed_at     timestamptz NOT NULL
);
-- Retention deletes the oldest rows in batches.
CREATE INDEX observations_observed_at ON observations (observed_at);
CREATE INDEX observations_container ON observations (container_id, observed_at DESC);
