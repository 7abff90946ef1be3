-- Counts kept up to date as rows change, so that a /metrics scrape, the admin API's lanes and
-- housekeeping cost the same with 1,000,000 queued events as with ten: before this, each
-- scrape counted the whole outbox (COUNT(*) GROUP BY target) and every open incident, and
-- housekeeping read every pending row to find the expired ones. See docs/performance.md,
-- "Backlog".
--
-- The counts are rows of changes, not one counter per target: a counter row would be locked
-- by every transaction that queues, delivers or dead-letters on its target until it commits,
-- so concurrent accepts (and a lane's delivery) would wait for each other's commit. Each
-- statement that changes the outbox adds one row per (target, status) it changed, written by
-- a statement trigger in the same transaction; a read sums them; housekeeping folds them
-- together (`Outbox::fold_counts`), so there are only ever a few.
CREATE TABLE outbox_counts (
    target TEXT   NOT NULL,
    status TEXT   NOT NULL,
    n      BIGINT NOT NULL
);
CREATE INDEX outbox_counts_target ON outbox_counts (target, status);

INSERT INTO outbox_counts (target, status, n)
    SELECT target, status, COUNT(*) FROM outbox GROUP BY target, status;

CREATE FUNCTION outbox_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (target, status, n)
        SELECT target, status, COUNT(*) FROM new_rows GROUP BY target, status;
    RETURN NULL;
END $$;

CREATE FUNCTION outbox_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (target, status, n)
        SELECT target, status, -COUNT(*) FROM old_rows GROUP BY target, status;
    RETURN NULL;
END $$;

-- Most updates (a failure noted, a notice sent) change no status: they add nothing.
CREATE FUNCTION outbox_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_counts (target, status, n)
        SELECT target, status, SUM(n) FROM (
            SELECT target, status, -1 AS n FROM old_rows
            UNION ALL
            SELECT target, status, 1 AS n FROM new_rows
        ) changes
        GROUP BY target, status HAVING SUM(n) <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_inserted();
CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_deleted();
CREATE TRIGGER outbox_counts_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_updated();

-- incident_counts: incidents per status, for the open-incidents gauge; rows of changes too,
-- since every accept writes incidents.
CREATE TABLE incident_counts (
    status TEXT   NOT NULL,
    n      BIGINT NOT NULL
);

INSERT INTO incident_counts (status, n)
    SELECT status, COUNT(*) FROM incidents GROUP BY status;

CREATE FUNCTION incident_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO incident_counts (status, n)
        SELECT status, COUNT(*) FROM new_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION incident_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO incident_counts (status, n)
        SELECT status, -COUNT(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;

CREATE FUNCTION incident_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO incident_counts (status, n)
        SELECT status, SUM(n) FROM (
            SELECT status, -1 AS n FROM old_rows
            UNION ALL
            SELECT status, 1 AS n FROM new_rows
        ) changes
        GROUP BY status HAVING SUM(n) <> 0;
    RETURN NULL;
END $$;

-- An accept's INSERT … ON CONFLICT DO UPDATE fires both: the insert trigger sees the rows it
-- inserted, the update trigger the rows it updated.
CREATE TRIGGER incident_counts_insert AFTER INSERT ON incidents
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION incident_counts_inserted();
CREATE TRIGGER incident_counts_delete AFTER DELETE ON incidents
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION incident_counts_deleted();
CREATE TRIGGER incident_counts_update AFTER UPDATE ON incidents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION incident_counts_updated();

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
