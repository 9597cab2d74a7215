-- Re-drive of stalled records (a non-final record whose last transition is older than a lease:
-- its messages may have been lost to a broker restart, a recreated topic or retention).
ALTER TABLE fiscal_records ADD COLUMN redrives integer NOT NULL DEFAULT 0;
-- The reconciler's scan: non-final records by age; final records (nearly all) stay out of it.
CREATE INDEX fiscal_records_in_flight ON fiscal_records (updated_at)
    WHERE status NOT IN ('archived', 'rejected', 'duplicate');
