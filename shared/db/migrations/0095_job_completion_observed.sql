-- A job's completion, observed once (issue 18, seed 000's metrics).
--
-- Whoever derives a job's completion first writes status and completed_at (the report service's
-- job checks, a job view, the ingest stage's sweep); the ingest stage's sweep then claims each
-- completed job once, across its replicas (UPDATE ... WHERE observed_at IS NULL RETURNING), logs
-- the job's throughput and observes fiscalflow_job_duration_seconds.  Jobs completed before this
-- migration count as observed: an upgrade does not log every job of the past again.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS observed_at timestamptz;
UPDATE jobs SET observed_at = completed_at WHERE status = 'completed' AND observed_at IS NULL;

-- The sweep's two reads, and the priority share's window (services/ingest/quota.py): each a small
-- partial index, whatever the number of jobs of the past.
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (created_at, job_id) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_unobserved ON jobs (completed_at) WHERE status = 'completed' AND observed_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_priority_created ON jobs (created_at) WHERE priority = 'high';
