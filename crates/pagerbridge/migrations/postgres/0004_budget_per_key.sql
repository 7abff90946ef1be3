-- One send budget per routing key instead of per target. The same as
-- migrations/sqlite/0004_budget_per_key.sql; see there for why.

CREATE TABLE budget_secret (
    id     SMALLINT PRIMARY KEY CHECK (id = 1),
    secret BYTEA    NOT NULL CHECK (length(secret) = 32)
);

DROP TABLE budget_sends;
CREATE TABLE budget_sends (
    id      BIGSERIAL PRIMARY KEY,
    budget  TEXT   NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX budget_sends_budget ON budget_sends (budget, sent_at);
