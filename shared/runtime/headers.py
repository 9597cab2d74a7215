"""Kafka header names, each spelled only here: the runtime's and the domain's (the job id), shared by
the stages, the dead-letter codec and the tests. Values are UTF-8 strings."""

from __future__ import annotations

PREFIX = "ff-"
# The domain's: the job a record belongs to.  Set by the ingest stage (or a producer); the runtime
# carries it through every stage, retry and dead letter, and a replay keeps it.
JOB_ID = "ff-job-id"
# The domain's: the job's profile (seed 000), set by the ingest stage from the job, travelling like
# the job id.  RULES: "lenient" (absent: strict); MAX_ATTEMPTS: the job's max_retries + 1, which
# replaces the stages' FISCALFLOW_RETRY_MAX_ATTEMPTS for this record.
RULES = "ff-rules"
MAX_ATTEMPTS = "ff-max-attempts"
# The runtime's: per hop, except the replay count and re-drive generation, which travel on.
ATTEMPT = "ff-attempt"  # attempts already made (retry topic, dead letters)
DUE_AT_MS = "ff-due-at-ms"  # a retry is not processed before this time
PRIORITY = "ff-priority"  # "1" keeps a record on the priority lane through retries
ORIGIN_TOPIC = "ff-origin-topic"
ORIGIN_PARTITION = "ff-origin-partition"
ORIGIN_OFFSET = "ff-origin-offset"
# The input's broker timestamp: with the origin position it names one stored message, even where
# the local broker's memory storage reuses offsets after a restart (dead-letter identity).
ORIGIN_TIMESTAMP_MS = "ff-origin-timestamp-ms"
STAGE = "ff-stage"
REASON = "ff-reason"
ERROR_MESSAGE = "ff-error"
DETAILS = "ff-details"  # JSON: e.g. the full rule list of an invalid document
FIRST_FAILURE_MS = "ff-first-failure-ms"
LAST_FAILURE_MS = "ff-last-failure-ms"
TRACE_ID = "ff-trace-id"
REPLAY_COUNT = "ff-replay-count"
# A re-drive of a stalled record: its generation travels with it through every stage, so each
# stage's audit event of the new pass has a key of its own.
REDRIVE = "ff-redrive"
# Who asked for a re-drive (reconciler, cli) and the lease it used; a job resubmission sets neither.
REDRIVE_BY = "ff-redrive-by"
REDRIVE_LEASE_S = "ff-redrive-lease-s"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def to_dict(raw: list[tuple[str, str | bytes | None]] | dict[str, str | bytes | None] | None) -> dict[str, str]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {k: _text(v) for k, v in items}


def _text(v: str | bytes | None) -> str:
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def to_list(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def pass_key(headers: dict[str, str]) -> str:
    """Which pass of a record a message belongs to, for audit keys: its replay count, and its
    re-drive generation once re-driven (each pass writes its own audit events, a redelivery
    within a pass none)."""
    replay = headers.get(REPLAY_COUNT, "0")
    redrive = headers.get(REDRIVE)
    return f"{replay}:r{redrive}" if redrive else replay
