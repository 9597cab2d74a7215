-- Two look-ups of the seed contract's read routes (docs/seed-api.md, services/report/queries.py),
-- each a partial index: a record gets an entry when it becomes final (archived), not one per
-- transition.  CREATE INDEX holds off writes to fiscal_records while it builds (a few seconds at
-- a million records).
--
-- GET /api/v1/fiscal/records lists the most recently finished records first.  Without this index
-- a status filter over a million archived records is a sequential scan and a top-N sort (0.85 s
-- measured at 1 M rows); with it, an index range read (under 1 ms).  In-flight records are served
-- by fiscal_records_in_flight (0050).
CREATE INDEX IF NOT EXISTS fiscal_records_final_recent
    ON fiscal_records (status, updated_at DESC, record_id DESC)
    WHERE status IN ('archived', 'rejected', 'duplicate');
-- GET /api/v1/reports/daily's last_update: when the day's last document was archived, one index
-- entry read, concurrently with the ClickHouse query (a second ClickHouse query on the report's
-- one ClickHouse thread would have added as much as the daily query itself takes).
CREATE INDEX IF NOT EXISTS fiscal_records_archived_day
    ON fiscal_records (issued_on, updated_at)
    WHERE status = 'archived';
