-- The fingerprint index keeps only the incidents whose dedup key their fingerprint does not
-- imply. An incident keyed by the default key, the SHA-256 of its alert's labels, is found by
-- that key through the primary key: an Alertmanager fingerprint is a hash of the same labels,
-- so `accept`'s caller computes the key from the alert in hand. The full index cost each new
-- incident a write to a random page (its key, a fingerprint, is a hash): about a third of the
-- pages an accept wrote. See docs/performance.md, "The fingerprint index, sparse".
--
-- `labels_key`: 1 when `dedup_key` is the SHA-256 of the labels of the alert that last set
-- `fingerprint`; 0 otherwise (group keys, caller-chosen keys); NULL for incidents stored
-- before this, which stay in the index (they may be either).
ALTER TABLE incidents ADD COLUMN labels_key INTEGER;
DROP INDEX incidents_fingerprint;
CREATE INDEX incidents_fingerprint_remembered ON incidents (target, fingerprint)
    WHERE fingerprint IS NOT NULL AND labels_key IS NOT 1;
