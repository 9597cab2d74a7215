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
- ``invoice_lines``: the lines (``cfdi:Concepto``) of each archived document, written once per
  record like ``archived`` (the writer inserts a record's lines only when the table holds none of
  them; ReplacingMergeTree on (record_id, line_no) collapses a copy should one get in, and the
  route reads FINAL).  Cantidad, ValorUnitario, Importe, Descuento and TasaOCuota have at most 6
  decimals in CFDI 4.0: ``Decimal(38, 6)`` holds them exactly.

Every row carries ``region``: the issuer region (SFTP server) its record came from, as the registry
holds it (``fiscal_records.region``); the summing tables have it last in their sorting keys, so
every report can be narrowed to one region and the regions report sums per region.  '' is a row
whose region is not known (written before the column existed).  A rebuild moves it to its
record's region: the archived row written again (a newer version), and cancelled under '' in the
summing tables by a row of count -1 (their counts are signed for it: sink.py, set_regions).
"""

from __future__ import annotations

AMOUNT = "Decimal(38, 6)"  # CFDI amounts have at most 6 decimals
MXN = "Decimal(38, 12)"  # Total × TipoCambio (6 + 6 decimals), exact

# The materialised views, by name: an upgrade that changes what a view selects drops and creates it
# again (create_schema), which CREATE ... IF NOT EXISTS alone would not.
VIEWS = {
    "daily_totals_mv": """CREATE MATERIALIZED VIEW IF NOT EXISTS daily_totals_mv TO daily_totals AS
        SELECT day, issuer_rfc, tipo, moneda, region, toInt64(1) AS n, total, total_mxn FROM archived""",
    "monthly_totals_mv": """CREATE MATERIALIZED VIEW IF NOT EXISTS monthly_totals_mv TO monthly_totals AS
        SELECT toStartOfMonth(day) AS month, issuer_rfc, tipo, moneda, region, toInt64(1) AS n, total, total_mxn
        FROM archived""",
    "hourly_totals_mv": """CREATE MATERIALIZED VIEW IF NOT EXISTS hourly_totals_mv TO hourly_totals AS
        SELECT toStartOfHour(archived_at) AS hour, region, toInt64(1) AS n, total_mxn FROM archived""",
    "status_counts_mv": """CREATE MATERIALIZED VIEW IF NOT EXISTS status_counts_mv TO status_counts AS
        SELECT outcome, reason, region, toInt64(sign) AS n FROM record_outcomes""",
}

DDL = [
    f"""CREATE TABLE IF NOT EXISTS archived (
        record_id String, uuid String, issuer_rfc LowCardinality(String), receiver_rfc String,
        day Date, fecha String, tipo LowCardinality(String), moneda LowCardinality(String),
        tipo_cambio {AMOUNT}, total {AMOUNT}, total_mxn {MXN}, job_id String, s3_key String,
        archived_at DateTime64(3, 'UTC'), version UInt64, region LowCardinality(String)
    ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day) ORDER BY (day, issuer_rfc, uuid)""",
    f"""CREATE TABLE IF NOT EXISTS daily_totals (
        day Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        region LowCardinality(String), n Int64, total {AMOUNT}, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY (day, issuer_rfc, tipo, moneda, region)
    SETTINGS index_granularity = 1024""",
    VIEWS["daily_totals_mv"],
    # Whole months of a date range come from here: a year is 12 rows per group, not 365.
    f"""CREATE TABLE IF NOT EXISTS monthly_totals (
        month Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        region LowCardinality(String), n Int64, total {AMOUNT}, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY (month, issuer_rfc, tipo, moneda, region)
    SETTINGS index_granularity = 1024""",
    VIEWS["monthly_totals_mv"],
    f"""CREATE TABLE IF NOT EXISTS hourly_totals (
        hour DateTime('UTC'), region LowCardinality(String), n Int64, total_mxn {MXN}
    ) ENGINE = SummingMergeTree ORDER BY (hour, region)""",
    VIEWS["hourly_totals_mv"],
    """CREATE TABLE IF NOT EXISTS record_outcomes (
        record_id String, outcome LowCardinality(String), reason LowCardinality(String), job_id String,
        sign Int8, version UInt64, region LowCardinality(String)
    ) ENGINE = ReplacingMergeTree(version) ORDER BY record_id""",
    """CREATE TABLE IF NOT EXISTS status_counts (
        outcome LowCardinality(String), reason LowCardinality(String), region LowCardinality(String), n Int64
    ) ENGINE = SummingMergeTree ORDER BY (outcome, reason, region)""",
    VIEWS["status_counts_mv"],
    """CREATE TABLE IF NOT EXISTS dead_letters (
        record_id String, stage LowCardinality(String), reason LowCardinality(String), error String,
        details String, origin_topic String, attempt UInt32, job_id String,
        failed_at DateTime64(3, 'UTC'), version UInt64, letter_id String, region LowCardinality(String)
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (record_id, letter_id)""",
    # One row per line of an archived document (line_no from 1, document order), read per record
    # (GET /api/v1/records/{id}/lines): keyed by record id.
    f"""CREATE TABLE IF NOT EXISTS invoice_lines (
        record_id String, uuid String, line_no UInt32, product_code String, description String,
        quantity {AMOUNT}, unit_price {AMOUNT}, amount {AMOUNT}, discount Nullable({AMOUNT}),
        tax_rate Nullable({AMOUNT}), version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (record_id, line_no)""",
]

# A dead_letters table from before letter_id was ordered by record id alone (its merges kept one
# row per record): the column joins the sorting key, which ClickHouse allows only for a column
# added in the same ALTER.  Rows from before get letter_id '' and stay one per record.
DEAD_LETTERS_UPGRADE = ("ALTER TABLE dead_letters ADD COLUMN letter_id String,"
                        " MODIFY ORDER BY (record_id, letter_id)")

# Tables from before the region dimension (issue 18) get the column; a summing table also gets it
# at the end of its sorting key (the only place ClickHouse allows a new key column), in the same
# place as a new table has it, and a signed count: moving a row to its region cancels it under
# the old one (sink.py, set_regions), as status_counts' signs do.  Their rows from before get
# region '' — "not known": `fiscalflow report rebuild` sets each archived record's region from
# the registry.  The views are created again to carry the column (create_schema).
REGION = "region LowCardinality(String)"
REGION_UPGRADES = {
    "archived": f"ALTER TABLE archived ADD COLUMN {REGION}",
    "daily_totals": f"ALTER TABLE daily_totals ADD COLUMN {REGION} AFTER moneda,"
                    " MODIFY ORDER BY (day, issuer_rfc, tipo, moneda, region), MODIFY COLUMN n Int64",
    "monthly_totals": f"ALTER TABLE monthly_totals ADD COLUMN {REGION} AFTER moneda,"
                      " MODIFY ORDER BY (month, issuer_rfc, tipo, moneda, region), MODIFY COLUMN n Int64",
    "hourly_totals": f"ALTER TABLE hourly_totals ADD COLUMN {REGION} AFTER hour, MODIFY ORDER BY (hour, region),"
                     " MODIFY COLUMN n Int64",
    "record_outcomes": f"ALTER TABLE record_outcomes ADD COLUMN {REGION}",
    "status_counts": f"ALTER TABLE status_counts ADD COLUMN {REGION} AFTER reason,"
                     " MODIFY ORDER BY (outcome, reason, region)",
    "dead_letters": f"ALTER TABLE dead_letters ADD COLUMN {REGION}",
}

ARCHIVED_COLUMNS = ["record_id", "uuid", "issuer_rfc", "receiver_rfc", "day", "fecha", "tipo", "moneda",
                    "tipo_cambio", "total", "total_mxn", "job_id", "s3_key", "archived_at", "version", "region"]
OUTCOME_COLUMNS = ["record_id", "outcome", "reason", "job_id", "sign", "version", "region"]
LINE_COLUMNS = ["record_id", "uuid", "line_no", "product_code", "description", "quantity", "unit_price", "amount",
                "discount", "tax_rate", "version"]
DEAD_LETTER_COLUMNS = ["record_id", "stage", "reason", "error", "details", "origin_topic", "attempt", "job_id",
                       "failed_at", "version", "letter_id", "region"]
