-- Leases: which replica drives each lane (`lane:<target>`) or runs each singleton
-- (`housekeeping`, `silence`, `fallback`). See src/store/leases.rs.
--
-- `epoch` moves on whenever the owner changes (and on release); a send is fenced by
-- (name, owner, epoch) and an unexpired `expires_at`, checked where the budget slot is taken.
-- Rows are never deleted: a deleted row would restart its epoch and revive old fences.

CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    owner      TEXT   NOT NULL CHECK (owner <> ''),   -- a ReplicaId: random per process
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL                        -- milliseconds since the Unix epoch
);
