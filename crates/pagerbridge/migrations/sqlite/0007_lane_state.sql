-- A lane's state (healthy, rate limited, backing off, misconfigured) on its lease, as the
-- lane's owner last reported it: only the owner knows it, and the admin API may be asked on
-- any replica. Written on a change of state only, fenced by owner and epoch like a send;
-- cleared when the owner changes or releases. NULL for singletons. See src/store/leases.rs.
--
-- 0007, not 0006: 0006 adds the incidents' source and first event.

ALTER TABLE leases ADD COLUMN lane_state TEXT
    CHECK (lane_state IN ('healthy', 'rate_limited', 'backing_off', 'misconfigured'));
