"""The ingest API's own metrics (the stage's are in shared/runtime/metrics.py; names in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.domain.records import Priority

# Every refusal the API answers to slow a client down, with the Retry-After it sends: reason is
# producer_queue | pipeline_lag (the pipeline is behind), broker (the job's records were not
# taken), region_unreachable (its SFTP server), priority_quota (seed 002's priority share, 429).
BACKPRESSURE = Counter(
    "fiscalflow_api_backpressure_total", "Submissions the ingest API refused with Retry-After (503: the pipeline "
    "or a dependency is behind; 429: over the priority share), by status and reason.", ["status", "reason"])
BACKPRESSURE_REASONS = {"503": ("producer_queue", "pipeline_lag", "broker", "region_unreachable"),
                        "429": ("priority_quota",)}

# Observed once per job, by the ingest replica that claims its completion (services/ingest/completion.py).
JOB_DURATION = Histogram(
    "fiscalflow_job_duration_seconds", "Jobs' execution time: submission to completion (every member final), "
    "observed once per job.", ["priority"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200))

# The series exist (at 0) before the first refusal and the first completed job: a rate() over them
# is 0, not absent.
for _status, _reasons in BACKPRESSURE_REASONS.items():
    for _reason in _reasons:
        BACKPRESSURE.labels(_status, _reason)
for _priority in Priority:
    JOB_DURATION.labels(_priority.value)
