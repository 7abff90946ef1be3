-- Where each incident's trigger came from ('alertmanager' | 'api'; NULL for incidents stored
-- before this migration, which are therefore never reconciled) and when its first event was
-- queued. The Alertmanager sync reconciles only open incidents from Alertmanager, found by
-- the index.
ALTER TABLE incidents ADD COLUMN source TEXT CHECK (source IN ('alertmanager', 'api'));
ALTER TABLE incidents ADD COLUMN first_event_at BIGINT;
CREATE INDEX incidents_open_by_source ON incidents (source, status);
