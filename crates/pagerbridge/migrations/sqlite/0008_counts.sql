-- Counts kept up to date as rows change, so that a /metrics scrape, the admin API's lanes and
-- housekeeping cost the same with 1,000,000 queued events as with ten: before this, each
-- scrape counted the whole outbox (COUNT(*) GROUP BY target) and every open incident, and
-- housekeeping read every pending row to find the expired ones. See docs/performance.md,
-- "Backlog".
--
-- outbox_counts: rows of the outbox per (target, status), maintained by the triggers below in
-- the same transaction as the change to the outbox, whichever statement made it (accept,
-- delivery, dead-lettering, replay, drop, expiry). SQLite has one writer at a time, so one
-- row per (target, status) costs no waiting.
CREATE TABLE outbox_counts (
    target TEXT    NOT NULL,
    status TEXT    NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (target, status)
) WITHOUT ROWID;

INSERT INTO outbox_counts (target, status, n)
    SELECT target, status, COUNT(*) FROM outbox WHERE true GROUP BY target, status;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts (target, status, n) VALUES (NEW.target, NEW.status, 1)
        ON CONFLICT (target, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE target = OLD.target AND status = OLD.status;
END;

CREATE TRIGGER outbox_counts_update AFTER UPDATE OF target, status ON outbox
    WHEN OLD.target IS NOT NEW.target OR OLD.status IS NOT NEW.status
BEGIN
    UPDATE outbox_counts SET n = n - 1 WHERE target = OLD.target AND status = OLD.status;
    INSERT INTO outbox_counts (target, status, n) VALUES (NEW.target, NEW.status, 1)
        ON CONFLICT (target, status) DO UPDATE SET n = n + 1;
END;

-- incident_counts: incidents per status, for the open-incidents gauge.
CREATE TABLE incident_counts (
    status TEXT    PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO incident_counts (status, n)
    SELECT status, COUNT(*) FROM incidents WHERE true GROUP BY status;

CREATE TRIGGER incident_counts_insert AFTER INSERT ON incidents BEGIN
    INSERT INTO incident_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER incident_counts_delete AFTER DELETE ON incidents BEGIN
    UPDATE incident_counts SET n = n - 1 WHERE status = OLD.status;
END;

CREATE TRIGGER incident_counts_update AFTER UPDATE OF status ON incidents
    WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE incident_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO incident_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;

-- The oldest pending event of a lane (the gauge pagerbridge_oldest_pending_age_seconds and
-- the admin API's lanes) is the first entry of its target here, and expiry finds the pending
-- events accepted before its cutoff without reading the others.
CREATE INDEX outbox_pending_age ON outbox (target, accepted_at) WHERE status = 'pending';

-- Replayed events expire from their replay: the few pending ones that were replayed, by when.
-- Rows never replayed are not in this index, so it costs an accept nothing.
CREATE INDEX outbox_pending_replayed ON outbox (replayed_at)
    WHERE status = 'pending' AND replayed_at IS NOT NULL;

-- The fallback's work list: dead letters it has not reported, and events that started failing
-- (to find the failing lanes). Rows enter these indexes only once they are dead or have
-- failed, so they cost an accept nothing, and a healthy backlog is never read.
CREATE INDEX outbox_dead_unnotified ON outbox (id)
    WHERE status = 'dead' AND dead_notified_at IS NULL;
CREATE INDEX outbox_pending_failed ON outbox (first_failed_at)
    WHERE status = 'pending' AND first_failed_at IS NOT NULL;
