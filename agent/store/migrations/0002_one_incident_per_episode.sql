-- One active incident per container and failure episode, whatever signals it shows:
-- a crash loop is what repeated exits become, not a second incident beside them.
-- Where a container has several active incidents (written by an older medic), the
-- oldest carries on and the others are resolved, saying why.

INSERT INTO incident_status_changes (id, incident_id, status, at, note)
SELECT i.id || '-merged-0002', i.id, 'resolved', now(),
       'merged into incident ' || left(first.id, 8) || ': one incident per failure episode'
FROM incidents i
JOIN LATERAL (
    SELECT o.id FROM incidents o
    WHERE o.container_id = i.container_id AND o.status IN ('open', 'healing', 'escalated')
    ORDER BY o.opened_at, o.id LIMIT 1
) first ON first.id <> i.id
WHERE i.status IN ('open', 'healing', 'escalated');

UPDATE incidents i
SET status = 'resolved', resolved_at = now(), updated_at = now(),
    note = c.note
FROM incident_status_changes c
WHERE c.id = i.id || '-merged-0002';

DROP INDEX incidents_one_active;
CREATE UNIQUE INDEX incidents_one_active
    ON incidents (container_id)
    WHERE status IN ('open', 'healing', 'escalated');
