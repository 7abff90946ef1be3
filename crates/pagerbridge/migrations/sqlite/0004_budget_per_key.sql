-- One send budget per routing key instead of per target: PagerDuty limits per key, so two
-- targets sharing a key must share a budget. The budget is named by HMAC-SHA256 of the key
-- under `budget_secret` (see src/store/budget_id.rs), never by the key.
--
-- The old per-target slots are dropped: they only cover the last window (a minute at most).

CREATE TABLE budget_secret (
    id     INTEGER PRIMARY KEY CHECK (id = 1),   -- one row; the first replica to start writes it
    secret BLOB    NOT NULL CHECK (length(secret) = 32)
);

DROP INDEX budget_sends_target;
DROP TABLE budget_sends;
CREATE TABLE budget_sends (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,   -- the slot: never reused
    budget  TEXT    NOT NULL,                    -- the BudgetId: hex of the HMAC
    sent_at INTEGER NOT NULL
);
CREATE INDEX budget_sends_budget ON budget_sends (budget, sent_at);
