-- Store stage: duplicates are decided by TFD UUID case-insensitively (CFDI-VALIDATION.md §7.3).
-- The store writes upper-case UUIDs, but this index makes the last line of defence hold for any
-- writer, and serves the store's batched "is this UUID archived already?" look-up.
CREATE UNIQUE INDEX IF NOT EXISTS fiscal_records_archived_uuid_ci
    ON fiscal_records (upper(tfd_uuid)) WHERE status = 'archived';
