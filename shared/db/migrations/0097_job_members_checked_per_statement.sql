-- A job's members name a job: checked once per statement instead of once per row.
--
-- The foreign key job_records.job_id → jobs ran its check (a query and a row lock) for every
-- member: about 40 % of PostgreSQL's time to COPY a 100,000-id job's members, and that COPY is
-- what an API request waits for (`fiscalflow bench ingest-api`).  The same rule, kept by two
-- triggers: after an INSERT into job_records, the statement's new rows (a transition table) must
-- name existing jobs, locked FOR KEY SHARE as the foreign key locked them, so a concurrent
-- delete waits; and a job that has members can be neither deleted nor re-keyed.
ALTER TABLE job_records DROP CONSTRAINT IF EXISTS job_records_job_id_fkey;

CREATE OR REPLACE FUNCTION job_records_name_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    named bigint;
    found bigint;
BEGIN
    SELECT count(DISTINCT job_id) INTO named FROM new_members;
    SELECT count(*) INTO found
    FROM (SELECT 1 FROM jobs WHERE job_id IN (SELECT job_id FROM new_members) FOR KEY SHARE) locked;
    IF found < named THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'insert or update on table "job_records" violates foreign key constraint "job_records_job_id_fkey"',
            DETAIL = 'A job_id of the new rows is not present in table "jobs".',
            TABLE = 'job_records', CONSTRAINT = 'job_records_job_id_fkey';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER job_records_name_jobs AFTER INSERT ON job_records
    REFERENCING NEW TABLE AS new_members FOR EACH STATEMENT EXECUTE FUNCTION job_records_name_jobs();

CREATE OR REPLACE FUNCTION jobs_keep_their_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.job_id IS DISTINCT FROM OLD.job_id)
       AND EXISTS (SELECT 1 FROM job_records WHERE job_id = OLD.job_id) THEN
        RAISE foreign_key_violation USING
            MESSAGE = 'update or delete on table "jobs" violates foreign key constraint "job_records_job_id_fkey" on table "job_records"',
            DETAIL = format('Key (job_id)=(%s) is still referenced from table "job_records".', OLD.job_id),
            TABLE = 'jobs', CONSTRAINT = 'job_records_job_id_fkey';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

CREATE TRIGGER jobs_keep_their_members BEFORE DELETE OR UPDATE OF job_id ON jobs
    FOR EACH ROW EXECUTE FUNCTION jobs_keep_their_members();
