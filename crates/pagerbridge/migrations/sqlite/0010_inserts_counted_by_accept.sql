-- Inserts into the outbox and the incidents are counted by `accept` itself, in the same
-- transaction, one statement per (target, status) for the whole batch, instead of by a row
-- trigger: a table with an INSERT trigger makes SQLite copy every row of a multi-row INSERT
-- into a temporary table before inserting it (with the events' JSON, about a page per row),
-- which cost the single writer about a quarter of its time. Updates and deletes are still
-- counted by the triggers of migration 0008. `accept` is the only statement that inserts into
-- these tables. See docs/performance.md, "No copy of the rows before the insert".
DROP TRIGGER outbox_counts_insert;
DROP TRIGGER incident_counts_insert;
