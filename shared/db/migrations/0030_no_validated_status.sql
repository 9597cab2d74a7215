-- 'validated' was never written: the validate stage moves no state (one PostgreSQL transition
-- less per record), so the status is gone from the model and the API.  A row that holds it
-- anyway is put back to 'downloaded', where the validate stage's input finds it (its messages
-- carry the document, not the status).
UPDATE fiscal_records SET status = 'downloaded' WHERE status = 'validated';
ALTER TABLE fiscal_records DROP CONSTRAINT IF EXISTS fiscal_records_status_check;
ALTER TABLE fiscal_records ADD CONSTRAINT fiscal_records_status_check
    CHECK (status IN ('pending', 'downloading', 'downloaded', 'archived', 'rejected', 'duplicate'));
