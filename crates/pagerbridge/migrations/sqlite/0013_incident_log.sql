-- Incident states decided by accepts and not yet folded into `incidents`, in the order they
-- were decided. `incidents` is keyed by (target, dedup key), and a dedup key is a hash: each
-- new incident's upsert dirtied a random page of that key and of `incidents_updated`, about a
-- fifth of an accept's work. An accept appends here instead (the pages fill in order, nothing
-- is indexed), and a fold moves a batch of states into `incidents` in one transaction, then
-- empties the table: off the request's line, except for an accept of a state that the
-- fingerprint index holds, which folds first, and for expiry. A store opened after a crash
-- folds what is left before it serves anything. See src/store/incident_log.rs and docs/performance.md.
--
-- The columns are `incidents`'; `seq` orders the states (an incident's later state after its
-- earlier one). Only states that `incidents_fingerprint_remembered` would not hold come here.
CREATE TABLE incident_log (
    seq               INTEGER PRIMARY KEY,
    target            TEXT    NOT NULL,
    dedup_key         TEXT    NOT NULL,
    fingerprint       TEXT,
    labels_key        INTEGER,
    status            TEXT    NOT NULL,
    last_payload_hash TEXT,
    last_trigger_at   INTEGER,
    last_sent_at      INTEGER,
    updated_at        INTEGER NOT NULL,
    source            TEXT CHECK (source IN ('alertmanager', 'api')),
    first_event_at    INTEGER,
    chain             INTEGER NOT NULL
);
