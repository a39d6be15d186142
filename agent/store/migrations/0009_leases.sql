-- Which medic acts for a scope when several watch it (docs/ha.md): one row per
-- scope, keyed by the same text as incidents.scope ('project=shop@ENGINE-ID').
-- The medic in holder leads until expires_at; it renews the row several times a
-- poll interval, and a medic standing by takes the row once it has run out.
-- Expiry is judged by this database's clock (now()) inside the statements that
-- claim the row and that check it, never by a medic's host clock.
--
-- token is the fencing token: it goes up by one each time the row passes to a
-- new term (another holder, or a holder whose lease ran out). Every incident and
-- attempt write of a leading medic checks, in its own transaction, that the row
-- still has its holder and token and has not run out; a write of an older term
-- is refused and nothing of it is stored.

CREATE TABLE leases (
    scope        text PRIMARY KEY,
    holder       text NOT NULL,
    token        bigint NOT NULL CHECK (token > 0),
    -- When this term began, and when its holder last renewed it.
    acquired_at  timestamptz NOT NULL,
    renewed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

-- The lease term of the last medic that wrote to an incident (opened it, added to
-- it, moved it, changed its status); NULL when none held a lease (a medic without
-- a database before, leader election off, or a person). A change that a former
-- leader spooled while Postgres was away, and replays later, is kept as history
-- but does not undo what a later term decided: it changes the incident only when
-- its term is not older than this one.
ALTER TABLE incidents ADD COLUMN term bigint;
