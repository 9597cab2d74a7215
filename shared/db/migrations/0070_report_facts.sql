-- What the reports need of an archived document, kept in the registry by the store stage with the
-- very values it sends on fiscal.stored (archived_at included, to the millisecond), so the report
-- tables can be verified against the system of record and rebuilt from it without reading the
-- archive.  NULL for records archived before this migration: a rebuild reads their document from
-- S3 instead (services/report/rebuild.py).
ALTER TABLE fiscal_records
    ADD COLUMN receiver_rfc text,
    ADD COLUMN fecha        text,            -- as written (issued_on is its date part)
    ADD COLUMN tipo         text,            -- TipoDeComprobante
    ADD COLUMN moneda       text,
    ADD COLUMN tipo_cambio  numeric,
    ADD COLUMN total        numeric,
    ADD COLUMN total_mxn    numeric,         -- Total x TipoCambio, exact
    ADD COLUMN archived_at  timestamptz;

-- Where a report rebuild got to (`fiscalflow report rebuild`), one row per scope (topic namespace
-- and day range): the next step of an unfinished rebuild continues after ``after`` (record ids in
-- order), so a rebuild killed half-way resumes instead of starting over.
CREATE TABLE report_rebuilds (
    scope        text PRIMARY KEY,
    after        text NOT NULL DEFAULT '',
    scanned      bigint NOT NULL DEFAULT 0,
    written      bigint NOT NULL DEFAULT 0,
    from_s3      bigint NOT NULL DEFAULT 0,
    missing      bigint NOT NULL DEFAULT 0,   -- archived records whose document S3 no longer holds
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
