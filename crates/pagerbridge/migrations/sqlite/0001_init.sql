-- The outbox: every accepted event until PagerDuty took it (then deleted) or it was
-- dead-lettered (status 'dead'). `id` is the acceptance order. No routing key is ever stored:
-- rows name their target.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target        TEXT    NOT NULL,
    dedup_key     TEXT,               -- NULL for change events: they order against nothing
    action        TEXT    NOT NULL,   -- trigger | acknowledge | resolve | change
    severity_rank INTEGER NOT NULL,   -- higher is more urgent
    event         TEXT    NOT NULL,   -- the PagerDuty event as JSON, without routing key
    alert         TEXT,               -- the source alert as JSON, for context
    fingerprint   TEXT,
    accepted_at   INTEGER NOT NULL,   -- ms since the epoch
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    status        TEXT    NOT NULL DEFAULT 'pending',  -- pending | dead
    dead_at       INTEGER,
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
    last_trigger_at   INTEGER,
    last_sent_at      INTEGER,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (target, dedup_key)
);
CREATE INDEX incidents_fingerprint ON incidents (target, fingerprint);
CREATE INDEX incidents_updated ON incidents (updated_at);

-- Requests made per target, for the sliding-window budget; survives restarts so a restart
-- does not burst past PagerDuty's limit.
CREATE TABLE budget_sends (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- the slot: never reused
    target  TEXT    NOT NULL,
    sent_at INTEGER NOT NULL
);
CREATE INDEX budget_sends_target ON budget_sends (target, sent_at);
