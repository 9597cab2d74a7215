-- The registry, jobs and the audit trail.
CREATE TABLE jobs (
    job_id          uuid PRIMARY KEY,
    priority        text NOT NULL DEFAULT 'normal' CHECK (priority IN ('normal', 'high')),
    callback_url    text,
    source          jsonb,
    record_count    integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    callback_state  text
);

CREATE TABLE fiscal_records (
    record_id       text PRIMARY KEY,
    region          text NOT NULL,
    remote_path     text NOT NULL,
    expected_sha256 text,
    size            bigint,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'downloading', 'downloaded', 'validated',
                                      'archived', 'rejected', 'duplicate')),
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    reason          text,
    tfd_uuid        text,            -- upper case
    issuer_rfc      text,
    issued_on       date,            -- date part of Fecha as written
    s3_key          text,
    sha256          text,
    gz_size         bigint,
    trust           text,
    job_id          uuid,            -- the job that last touched the record
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fiscal_records_status ON fiscal_records (status);
CREATE INDEX fiscal_records_issued_on ON fiscal_records (issued_on);
CREATE INDEX fiscal_records_issuer ON fiscal_records (issuer_rfc);
CREATE INDEX fiscal_records_region_path ON fiscal_records (region, remote_path);
-- Exactly one document per TFD UUID is ever archived (decision 3 of CFDI-VALIDATION.md §7).
CREATE UNIQUE INDEX fiscal_records_archived_uuid ON fiscal_records (tfd_uuid) WHERE status = 'archived';

-- Job membership; a job's counts are derived from its records' statuses, never incremented.
CREATE TABLE job_records (
    job_id    uuid NOT NULL REFERENCES jobs (job_id),
    record_id text NOT NULL,
    PRIMARY KEY (job_id, record_id)
);
CREATE INDEX job_records_record ON job_records (record_id);

-- Append-only: one row per state transition.  idempotency_key makes a redelivered message's
-- write a no-op.
CREATE TABLE audit_events (
    event_id         bigserial PRIMARY KEY,
    record_id        text NOT NULL,
    stage            text NOT NULL,
    from_status      text,
    to_status        text NOT NULL,
    reason           text,
    detail           jsonb,
    actor            text NOT NULL,
    trace_id         text,
    idempotency_key  text NOT NULL UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_events_record ON audit_events (record_id, event_id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
