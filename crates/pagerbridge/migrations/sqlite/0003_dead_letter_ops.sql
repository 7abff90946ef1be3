-- Dead-letter operations (the admin API and `pagerbridge admin`): replay and drop.
--
-- replayed_at:   when an operator last put the event back in the queue. Expiry by
--                max_event_age counts from it (else from accepted_at), so a replayed old event
--                is not dead-lettered again at the next maintenance tick.
-- superseded_by: the id of a newer event of the same incident that PagerDuty accepted while this
--                one was dead. Replaying it then would move PagerDuty back to an older state,
--                so replay skips it (reported as superseded).
-- dropped_at, drop_reason: an operator dropped the dead letter (status 'dropped'). The row is
--                kept as a record of what was given up on and why; every queue and
--                dead-letter query other than an explicit `include_dropped` listing ignores it.
ALTER TABLE outbox ADD COLUMN replayed_at INTEGER;
ALTER TABLE outbox ADD COLUMN superseded_by INTEGER;
ALTER TABLE outbox ADD COLUMN dropped_at INTEGER;
ALTER TABLE outbox ADD COLUMN drop_reason TEXT;
