-- Seed 000's job profile and invoice data (docs/seed-api.md).
--
-- A job's validation profile and retry budget: the ingest stage reads them when it starts a
-- member and puts them on the record's messages (headers ff-rules and ff-max-attempts), so they
-- travel through every stage, retry, re-drive and replay of that record.
ALTER TABLE jobs
    ADD COLUMN validation_rules text NOT NULL DEFAULT 'strict' CHECK (validation_rules IN ('strict', 'lenient')),
    ADD COLUMN max_retries      integer CHECK (max_retries BETWEEN 0 AND 100);

-- On the record, written by the store stage with the archive:
--   invoice_id        Serie + Folio of the CFDI (null when the document has neither)
--   validation_rules  the profile the document was judged by (strict | lenient)
--   warnings          the rules a lenient profile let pass, as [{"rule": ..., "sat_code": ...}]
ALTER TABLE fiscal_records
    ADD COLUMN invoice_id       text,
    ADD COLUMN validation_rules text,
    ADD COLUMN warnings         jsonb;
