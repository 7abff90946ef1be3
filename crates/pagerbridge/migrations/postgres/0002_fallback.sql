-- The fallback publisher's bookkeeping: when an event started failing, and when the fallback
-- webhook was told that it is failing or that it died. The fallback lane reads these columns,
-- so its notices are as durable as the events themselves.
ALTER TABLE outbox ADD COLUMN first_failed_at BIGINT;
ALTER TABLE outbox ADD COLUMN failing_notified_at BIGINT;
ALTER TABLE outbox ADD COLUMN dead_notified_at BIGINT;
