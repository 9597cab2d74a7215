"""ClickHouse tables of the report service, designed for its queries.

Base tables are ReplacingMergeTree (a redelivered event collapses on merge), but reports never
wait for merges: the writer inserts a row only when the base table does not hold it yet
(sink.py), so the summing tables the materialised views feed are exact at once, and the report
queries read a few thousand pre-summed rows instead of scanning a million (bench/report_bench.py).

- ``archived``: one row per archived document (day = date part of Fecha as written).
- ``daily_totals``: count and sums per (day, issuer, TipoDeComprobante, Moneda); ``monthly_totals`` the
  same per month (small granules: a report reads one day or month, not a scan).
- ``hourly_totals``: archived count and MXN total per hour of processing (archive) time.
- ``record_outcomes``: each record's final outcome; a changed outcome (a rejected record replayed
  and archived) is written as a cancelling row (sign -1) plus the new one, in one insert.
- ``status_counts``: records per (outcome, reason), the sum of those signs.
- ``dead_letters``: every dead letter once (``letter_id``: a redelivered copy is the same dead
  letter, shared/dlq/model.py), with its reason.
"""

from __future__ import annotations

AMOUNT = "Decimal(38, 6)"  # CFDI amounts have at most 6 decimals
MXN = "Decimal(38, 12)"  # Total × TipoCambio (6 + 6 decimals), exact

DDL = [
    f"""CREATE TABLE IF NOT EXISTS archived (
        record_id String, uuid String, issuer_rfc LowCardinality(String), receiver_rfc String,
        day Date, fecha String, tipo LowCardinality(String), moneda LowCardinality(String),
        tipo_cambio {AMOUNT}, total {AMOUNT}, total_mxn {MXN}, job_id String, s3_key String,
        archived_at DateTime64(3, 'UTC'), version UInt64
    ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day) ORDER BY (day, issuer_rfc, uuid)""",
    f"""CREATE TABLE IF NOT EXISTS daily_totals (
        day Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        n UInt64, total {AMOUNT}, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY (day, issuer_rfc, tipo, moneda) SETTINGS index_granularity = 1024""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS daily_totals_mv TO daily_totals AS
        SELECT day, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn FROM archived""",
    # Whole months of a date range come from here: a year is 12 rows per group, not 365.
    f"""CREATE TABLE IF NOT EXISTS monthly_totals (
        month Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        n UInt64, total {AMOUNT}, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY (month, issuer_rfc, tipo, moneda) SETTINGS index_granularity = 1024""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS monthly_totals_mv TO monthly_totals AS
        SELECT toStartOfMonth(day) AS month, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn
        FROM archived""",
    f"""CREATE TABLE IF NOT EXISTS hourly_totals (
        hour DateTime('UTC'), n UInt64, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY hour""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS hourly_totals_mv TO hourly_totals AS
        SELECT toStartOfHour(archived_at) AS hour, toUInt64(1) AS n, total_mxn FROM archived""",
    """CREATE TABLE IF NOT EXISTS record_outcomes (
        record_id String, outcome LowCardinality(String), reason LowCardinality(String), job_id String,
        sign Int8, version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY record_id""",
    """CREATE TABLE IF NOT EXISTS status_counts (
        outcome LowCardinality(String), reason LowCardinality(String), n Int64
    ) ENGINE = SummingMergeTree ORDER BY (outcome, reason)""",
    """CREATE MATERIALIZED VIEW IF NOT EXISTS status_counts_mv TO status_counts AS
        SELECT outcome, reason, toInt64(sign) AS n FROM record_outcomes""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        record_id String, stage LowCardinality(String), reason LowCardinality(String), error String,
        details String, origin_topic String, attempt UInt32, job_id String,
        failed_at DateTime64(3, 'UTC'), version UInt64, letter_id String
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (record_id, letter_id)""",
]

# A dead_letters table from before letter_id was ordered by record id alone (its merges kept one
# row per record): the column joins the sorting key, which ClickHouse allows only for a column
# added in the same ALTER.  Rows from before get letter_id '' and stay one per record.
DEAD_LETTERS_UPGRADE = ("ALTER TABLE dead_letters ADD COLUMN letter_id String,"
                        " MODIFY ORDER BY (record_id, letter_id)")

ARCHIVED_COLUMNS = ["record_id", "uuid", "issuer_rfc", "receiver_rfc", "day", "fecha", "tipo", "moneda",
                    "tipo_cambio", "total", "total_mxn", "job_id", "s3_key", "archived_at", "version"]
OUTCOME_COLUMNS = ["record_id", "outcome", "reason", "job_id", "sign", "version"]
DEAD_LETTER_COLUMNS = ["record_id", "stage", "reason", "error", "details", "origin_topic", "attempt", "job_id",
                       "failed_at", "version", "letter_id"]
