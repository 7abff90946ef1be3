-- The PostgreSQL schema: the same tables, columns and indexes as migrations/sqlite/0001_init.sql,
-- so both stores hold the same data the same way. Timestamps are BIGINT ms since the epoch
-- (as in SQLite) and JSON is TEXT, stored exactly as serialised (JSONB would reorder keys).

-- The outbox: every accepted event until PagerDuty took it (then deleted) or it was
-- dead-lettered (status 'dead'). `id` is the acceptance order: within one incident ids are
-- allocated under the incident's lock, so they also follow commit order. No routing key is
-- ever stored: rows name their target.
CREATE TABLE outbox (
    id            BIGSERIAL PRIMARY KEY,
    target        TEXT    NOT NULL,
    dedup_key     TEXT,               -- NULL for change events: they order against nothing
    action        TEXT    NOT NULL,   -- trigger | acknowledge | resolve | change
    severity_rank INTEGER NOT NULL,   -- higher is more urgent
    event         TEXT    NOT NULL,   -- the PagerDuty event as JSON, without routing key
    alert         TEXT,               -- the source alert as JSON, for context
    fingerprint   TEXT,
    accepted_at   BIGINT  NOT NULL,   -- ms since the epoch
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    status        TEXT    NOT NULL DEFAULT 'pending',  -- pending | dead
    dead_at       BIGINT,
    dead_reason   TEXT
);
CREATE INDEX outbox_lane ON outbox (target, status, severity_rank DESC, id);
CREATE INDEX outbox_incident ON outbox (target, dedup_key, status, id);

-- What we last queued per incident: suppression of repeats, fingerprint -> dedup key.
CREATE TABLE incidents (
    target            TEXT    NOT NULL,
    dedup_key         TEXT    NOT NULL,
    fingerprint       TEXT,
    status            TEXT    NOT NULL,   -- triggered | acknowledged | resolved
    last_payload_hash TEXT,
    last_trigger_at   BIGINT,
    last_sent_at      BIGINT,
    updated_at        BIGINT  NOT NULL,
    PRIMARY KEY (target, dedup_key)
);
CREATE INDEX incidents_fingerprint ON incidents (target, fingerprint);
CREATE INDEX incidents_updated ON incidents (updated_at);

-- Requests made per target, for the sliding-window budget shared by all replicas; survives
-- restarts so a restart does not burst past PagerDuty's limit. `id` is the slot a grant hands
-- out (SQLite uses its rowid), so the answer's time can be settled on it.
CREATE TABLE budget_sends (
    id      BIGSERIAL PRIMARY KEY,
    target  TEXT    NOT NULL,
    sent_at BIGINT  NOT NULL
);
CREATE INDEX budget_sends_target ON budget_sends (target, sent_at);

-- Which replica drives which lane, until when (ms since the epoch). One replica sends for a
-- target at a time, so per-incident order and the budget hold; a dead replica's lease runs
-- out and another takes the lane over. Used by the multi-replica work, not yet by the Store.
CREATE TABLE lane_leases (
    target     TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
