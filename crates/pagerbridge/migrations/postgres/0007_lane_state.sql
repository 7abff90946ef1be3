-- A lane's state on its lease. The same as migrations/sqlite/0007_lane_state.sql; see there
-- for why.

ALTER TABLE leases ADD COLUMN lane_state TEXT
    CHECK (lane_state IN ('healthy', 'rate_limited', 'backing_off', 'misconfigured'));
