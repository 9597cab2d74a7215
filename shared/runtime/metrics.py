"""Every metric the services export, declared once (names documented in the README)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PROCESSED = Counter(
    "fiscalflow_messages_processed_total", "Messages a stage finished, by outcome.", ["stage", "outcome"]
)
FAILED = Counter("fiscalflow_messages_failed_total", "Failed handler calls, by reason.", ["stage", "reason"])
LATENCY = Histogram(
    "fiscalflow_stage_latency_seconds",
    "Handler time per message.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge("fiscalflow_in_flight", "Messages being handled now.", ["stage"])
WAITING = Gauge("fiscalflow_waiting", "Messages polled and waiting for a handler slot (a stage with a fair key "
                "reads on past its slots to find other keys' records: shared/runtime/fairness.py).", ["stage"])
BYTES_IN_FLIGHT = Gauge("fiscalflow_bytes_in_flight", "Bytes of documents the messages in flight hold "
                        "(shared/runtime/budget.py).", ["stage"])
BUDGET_WAITS = Counter("fiscalflow_budget_waits_total", "Reservations that waited for the byte budget "
                       "(Settings.max_in_flight_bytes) to free.", ["stage"])
CONSUMER_LAG = Gauge("fiscalflow_consumer_lag", "Messages behind the partition end.", ["stage", "topic", "partition"])
PARTITION_REWINDS = Counter(
    "fiscalflow_partition_rewinds_total", "Partitions read again from their log's start because the log ended "
    "before the consumer's position (the broker lost it).", ["stage", "topic"])
RETRIES = Counter("fiscalflow_retries_total", "Messages sent to the retry lane.", ["stage", "downstream"])
BREAKER_STATE = Gauge(
    "fiscalflow_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", ["stage", "downstream"]
)
DEAD_LETTERS = Counter("fiscalflow_dead_letters_total", "Dead letters produced.", ["stage", "reason"])
ASSIGNED = Gauge("fiscalflow_assigned_partitions", "Partitions assigned to this replica.", ["stage"])
PAUSED = Gauge("fiscalflow_stage_paused", "1 while the stage is paused by a breaker.", ["stage"])
HALTED = Gauge("fiscalflow_stage_halted", "1 while the stage is halted by its reject-ratio breaker.", ["stage"])
