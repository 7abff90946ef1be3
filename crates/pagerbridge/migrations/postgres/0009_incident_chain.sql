-- Each incident gets a `chain`, an integer set when it is first stored and never changed (the
-- time of its first event, in ms), and its outbox rows carry it. The outbox's index for "the
-- events of one incident" is keyed by (target, chain, dedup key) instead of (target, dedup
-- key): a dedup key is a hash, so every insert into the old index landed on a random page and
-- rewrote it (a 4 KiB page per ~90-byte entry, a third of the bytes an accept wrote); a new
-- incident's chain is the latest, so its events now append. See docs/performance.md.
--
-- For that, every *pending* or *dead* row of a key must carry the chain of the key's incident:
-- an incident is no longer forgotten while it has such events (`expire_incidents`), so a key
-- never gets a second incident, with another chain, beside its queued events. Dead letters
-- are replayed as they are (their chain is their incident's). Dropped dead letters are final
-- and are found by dedup key through `outbox_settled` instead.
ALTER TABLE incidents ADD COLUMN chain BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN chain BIGINT;

-- Incidents and rows stored before this all share chain 0: the new index then orders them as
-- the old one did.
UPDATE outbox SET chain = 0 WHERE dedup_key IS NOT NULL;

-- Incidents forgotten (incident_ttl) while events of theirs were still queued or dead: stored
-- again, in the state their last such event left them, so that a new event of the key joins
-- their chain instead of starting another. Their source is unknown (NULL), as for incidents
-- stored before sources were.
INSERT INTO incidents (target, dedup_key, fingerprint, status, updated_at, first_event_at, chain)
SELECT o.target, o.dedup_key, o.fingerprint,
       CASE o.action WHEN 'trigger' THEN 'triggered'
                     WHEN 'acknowledge' THEN 'acknowledged'
                     ELSE 'resolved' END,
       o.accepted_at, o.accepted_at, 0
FROM outbox o
WHERE o.dedup_key IS NOT NULL AND o.status IN ('pending', 'dead')
  AND o.id = (SELECT MAX(p.id) FROM outbox p
              WHERE p.target = o.target AND p.dedup_key = o.dedup_key
                AND p.status IN ('pending', 'dead'))
  AND NOT EXISTS (SELECT 1 FROM incidents i
                  WHERE i.target = o.target AND i.dedup_key = o.dedup_key);

DROP INDEX outbox_incident;
-- An incident's events, in order: the oldest pending one (next_eligible), the pending ones a
-- delivery supersedes, whether an incident has any left (expire_incidents).
CREATE INDEX outbox_chain ON outbox (target, chain, dedup_key, status, id);
-- Dead and dropped events by dedup key (replay, a delivery superseding dead letters): few
-- rows, so this partial index costs accepts nothing. Queries repeat `status <> 'pending'`
-- so that the planner (SQLite's above all) knows they may use it.
CREATE INDEX outbox_settled ON outbox (target, dedup_key, id) WHERE status <> 'pending';
