"""Metrics of the report service (the runtime's are declared in shared/runtime/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS = Counter("fiscalflow_report_events_total", "Events the report stage read, by kind.", ["kind"])
ROWS = Counter("fiscalflow_report_rows_total", "Rows written to ClickHouse, by table.", ["table"])
WRITE_FAILURES = Counter("fiscalflow_report_write_failures_total", "ClickHouse or PostgreSQL write failures.")
BATCH_SECONDS = Histogram("fiscalflow_report_batch_seconds", "Time to write one batch.",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
