"""Metrics of the report service (the runtime's are declared in shared/runtime/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("fiscalflow_report_events_total", "Events the report stage read, by kind.", ["kind"])
ROWS = Counter("fiscalflow_report_rows_total", "Rows written to ClickHouse, by table.", ["table"])
WRITE_FAILURES = Counter("fiscalflow_report_write_failures_total", "ClickHouse or PostgreSQL write failures.")
BATCH_SECONDS = Histogram("fiscalflow_report_batch_seconds", "Time to write one batch.",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

# The last consistency check against PostgreSQL (services/report/consistency.py): alert on
# differences > 0 lasting longer than a few checks.
VERIFY_DIFFERENCES = Gauge("fiscalflow_report_verify_differences",
                           "Days and statuses whose report rows differ from PostgreSQL's records (last check).")
VERIFY_RECORDS_OFF = Gauge("fiscalflow_report_verify_records_off",
                           "Records the reports miss or count extra, over the differing cells (last check).")
VERIFY_CHECKED_AT = Gauge("fiscalflow_report_verify_checked_timestamp_seconds",
                          "When the report tables were last checked against PostgreSQL (Unix time).")
