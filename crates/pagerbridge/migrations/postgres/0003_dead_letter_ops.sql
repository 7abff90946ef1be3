-- Dead-letter operations (the admin API and `pagerbridge admin`): replay and drop. The same
-- columns as migrations/sqlite/0003_dead_letter_ops.sql; see there for what each means.
ALTER TABLE outbox ADD COLUMN replayed_at BIGINT;
ALTER TABLE outbox ADD COLUMN superseded_by BIGINT;
ALTER TABLE outbox ADD COLUMN dropped_at BIGINT;
ALTER TABLE outbox ADD COLUMN drop_reason TEXT;
