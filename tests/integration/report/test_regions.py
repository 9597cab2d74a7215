"""Per-region results (issue 18, UC2) on the report service as a process: records of two issuer
regions archived by the real store stage carry their region into every report row; each report
narrowed to one region sums, over the regions, to the all-regions figure; the regions report and
``fiscalflow report regions`` say the same; the record lists filter by region.  And a report
database from before the region column: upgraded in place at start, its rows under region '' until
``report rebuild`` moves them to their records' regions, after which ``report verify`` agrees."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from services.store.service import build_stage
from shared.cli.money import money
from shared.db.records import Registration, Transition, apply_transitions, register
from shared.domain.records import RecordStatus
from shared.runtime import headers as H
from shared.settings import PROJECT_ROOT, Settings
from shared.topics import DLQ, STORED, Stage, input_topic
from tests.integration.report.conftest import ReportProc, running_report
from tests.integration.store.harness import Topics, validated
from tests.support.stages import stage_running
from tooling.issuers.generator import GeneratedInvoice, InvoiceGenerator
from tooling.issuers.pki import DemoPKI

pytestmark = pytest.mark.integration

DAYS = 2  # of the first tests' invoices
REGIONS = ("north", "south")
NOWHERE = "atlantis"  # a region without records
D = Decimal


@dataclass
class Flowed:
    invs: dict[str, GeneratedInvoice]  # archived, by record id
    region: dict[str, str]  # every record's region
    rejected: str  # rejected in south; its dead letter names no region
    pending: str  # registered in north, never sent
    days: list[str]  # the invoices' days of Fecha: no other record of the registry has them


async def _unused_days(settings: Settings, n: int) -> dt.date:
    """The first of ``n`` days of Fecha no record of the registry has: the database outlives test
    sessions (and other tests use days of their own), so the registry's records of these days are
    this test's, which ``report verify`` and ``report rebuild`` over them count."""
    conn = await _pg(settings)
    try:
        while True:
            start = dt.date(2022, 2, 1) + dt.timedelta(days=random.randrange(8 * 365))
            if not await conn.fetchval("SELECT count(*) FROM fiscal_records WHERE issued_on BETWEEN $1 AND $2",
                                       start, start + dt.timedelta(days=n - 1)):
                return start
    finally:
        await conn.close()


async def _pg(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.pg_dsn.get_secret_value())


async def _through_store(settings: Settings, topics: Topics, invs: dict[str, GeneratedInvoice],
                         region: dict[str, str], extra: list[Registration]) -> None:
    """Register the records in their regions and archive ``invs`` with the real store stage, on
    ``topics`` (its stored events go to ``topics``' fiscal.stored)."""
    conn = await _pg(settings)
    try:
        await register(conn, [Registration(rid, region[rid], f"t/{rid}.xml") for rid in invs] + extra)
    finally:
        await conn.close()
    topics.produce(input_topic(Stage.STORE), [(rid, validated(rid, inv, region=region[rid]).encode())
                                              for rid, inv in invs.items()])
    async with stage_running(settings, Stage.STORE, lambda host: build_stage(host, topic_namespace=topics.ns)):
        await asyncio.to_thread(topics.read, STORED, set(invs), 90, 1, 0.5)


@pytest.fixture(scope="module")
def flowed(report: ReportProc, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flowed]:
    pki = DemoPKI.ensure(Path(tmp_path_factory.mktemp("pki")), issuers=3)
    start = asyncio.run(_unused_days(stack_settings, DAYS))
    gen = InvoiceGenerator(pki, seed=random.randrange(1 << 30), start=start, days=DAYS)
    run = f"reg-{random.randrange(1 << 32):08x}"
    invs, region = {}, {}
    for i in range(14):
        rid = f"{run}-{i}"
        invs[rid], region[rid] = gen.generate(i, defect=None), REGIONS[i % 3 % 2]  # 9 north, 5 south
    rejected, pending = f"{run}-rejected", f"{run}-pending"
    region |= {rejected: "south", pending: "north"}

    async def rejection() -> None:
        conn = await _pg(stack_settings)
        try:
            assert await apply_transitions(conn, [Transition(
                rejected, RecordStatus.REJECTED, (RecordStatus.PENDING,), "download", "test", f"{rejected}:r",
                reason="CHECKSUM_MISMATCH", last_error="test")]) == [True]
        finally:
            await conn.close()

    asyncio.run(_through_store(stack_settings, report.topics, invs, region,
                               [Registration(rejected, "south", f"t/{rejected}.xml"),
                                Registration(pending, "north", f"t/{pending}.xml")]))
    asyncio.run(rejection())
    # The download stage's dead letter: its message (a DownloadTask here reduced to nothing) need
    # not name the region; the report service finds it in the registry.
    report.topics.produce(DLQ, [(rejected, b"{}")], headers={H.REASON: "CHECKSUM_MISMATCH", H.STAGE: "download"})
    # (The summary's final outcomes are ClickHouse's: this module's records only.)
    report.wait_until(lambda: [report.get("/api/v1/reports/summary").json()["by_status"][s]
                               for s in ("archived", "rejected")] == [len(invs), 1])
    yield Flowed(invs, region, rejected, pending, [(start + dt.timedelta(days=i)).isoformat() for i in range(DAYS)])


def _daily(report: ReportProc, day: str, region: str | None = None) -> tuple[int, Decimal, dict[str, Any]]:
    resp = report.get("/api/v1/reports/daily", date=day, region=region)
    if resp.status_code == 404:
        assert resp.json()["error"] == "not_found", resp.text
        return 0, D(0), {}
    body = resp.json()
    return body["record_count"], D(body["total_amount"]), body


def test_every_report_narrowed_to_a_region_sums_to_the_all_regions_figure(report: ReportProc, flowed: Flowed) -> None:
    expected: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, D(0)])  # (day, region) -> count, MXN
    for rid, inv in flowed.invs.items():
        e = expected[(inv.fecha[:10], flowed.region[rid])]
        e[0] += 1
        e[1] += inv.total_mxn
    for day in flowed.days:
        n, mxn, body = _daily(report, day)
        per_region = {r: _daily(report, day, r) for r in REGIONS}
        assert {r: (v[0], v[1]) for r, v in per_region.items()} == {
            r: tuple(expected.get((day, r), [0, D(0)])) for r in REGIONS}, day
        assert n == sum(v[0] for v in per_region.values()) and mxn == sum(v[1] for v in per_region.values())
        # … down to each group and issuer
        for key, field in (("groups", ("tipo", "moneda")), ("issuers", ("rfc",))):
            summed: dict[tuple[str, ...], int] = defaultdict(int)
            for _, _, b in per_region.values():
                for g in b.get(key, []):
                    summed[tuple(g[f] for f in field)] += g["count"]
            assert summed == {tuple(g[f] for f in field): g["count"] for g in body.get(key, [])}, (day, key)
        missing = report.get("/api/v1/reports/daily", date=day, region=NOWHERE)
        assert missing.status_code == 404
        assert missing.json()["detail"] == f"no archived documents dated {day} from region {NOWHERE}"

    span = {"from": flowed.days[0], "to": flowed.days[-1]}

    def issuer_groups(region: str | None) -> dict[tuple[str, str, str], list[Any]]:
        body = report.get("/api/v1/reports/issuers", **span, region=region).json()
        assert body["region"] == region
        return {(i["rfc"], g["tipo"], g["moneda"]): [g["count"], D(g["total"]), D(g["total_mxn"])]
                for i in body["issuers"] for g in i["groups"]}

    summed_groups: dict[tuple[str, str, str], list[Any]] = defaultdict(lambda: [0, D(0), D(0)])
    for r in REGIONS:
        for k, v in issuer_groups(r).items():
            summed_groups[k] = [a + b for a, b in zip(summed_groups[k], v, strict=True)]
    assert summed_groups == issuer_groups(None)
    assert issuer_groups(NOWHERE) == {}

    def trend(region: str | None) -> int:
        body = report.get("/api/v1/reports/trend", hours=3, region=region).json()
        assert body["region"] == region and len(body["points"]) == 3
        return sum(p["count"] for p in body["points"])

    assert [trend(r) for r in REGIONS] == [sum(1 for rid in flowed.invs if flowed.region[rid] == r) for r in REGIONS]
    assert trend(None) == len(flowed.invs) and trend(NOWHERE) == 0

    # The regions report: the same sums per region, and their total is the all-regions one.
    body = report.get("/api/v1/reports/regions", **span).json()
    assert body["from"] == span["from"] and body["to"] == span["to"]
    assert {r["region"]: (r["record_count"], D(r["total_mxn"]), r["rejected"], r["duplicate"])
            for r in body["regions"]} == {
        r: (sum(expected[(d, r)][0] for d in flowed.days), sum((expected[(d, r)][1] for d in flowed.days), D(0)),
            None, None) for r in REGIONS}
    assert body["record_count"] == len(flowed.invs) == sum(r["record_count"] for r in body["regions"])
    assert D(body["total_mxn"]) == sum(inv.total_mxn for inv in flowed.invs.values())
    # Every day: the rejections too (the dead letter named no region: the registry's, south).
    every = report.get("/api/v1/reports/regions").json()
    assert every["from"] is None and every["to"] is None
    assert {r["region"]: (r["record_count"], r["rejected"], r["duplicate"]) for r in every["regions"]} == {
        "north": (9, 0, 0), "south": (5, 1, 0)}
    # The summary of one region: ClickHouse's final outcomes of that region.
    for r, archived, rejected in (("north", 9, 0), ("south", 5, 1), (NOWHERE, 0, 0)):
        by_status = report.get("/api/v1/reports/summary", region=r).json()["by_status"]
        assert (by_status["archived"], by_status["rejected"]) == (archived, rejected), r
    assert report.get("/api/v1/reports/summary", region="north").json()["by_status"]["pending"] >= 1
    assert report.get("/api/v1/reports/summary", region="south").json()["by_reason"] == {"CHECKSUM_MISMATCH": 1}
    # And the report tables agree with the registry per day and region.
    verify = report.get("/api/v1/reports/verify", **span, settle_s=0).json()
    assert verify["consistent"], verify
    # The (day, region) pairs holding records; ``expected`` is a defaultdict, and the regions check
    # above indexed every pair of the span, so a region with no record on a day (5 south invoices
    # all on one of 2 days: 1 run in 16) is a key of it with a zero count.
    assert {(c["day"], c["region"]) for c in verify["cells"]} == {k for k, (n, _) in expected.items() if n}


def test_the_record_lists_filter_by_region(report: ReportProc, flowed: Flowed) -> None:
    for day in flowed.days:
        everyone = {r["record_id"]: r["region"] for r in report.get("/api/v1/records", date=day, limit=1000)
                    .json()["records"]}
        assert everyone == {rid: flowed.region[rid] for rid, inv in flowed.invs.items() if inv.fecha[:10] == day}
        for region in REGIONS:
            page = report.get("/api/v1/records", date=day, region=region, limit=1000).json()
            assert {r["record_id"] for r in page["records"]} == {k for k, v in everyone.items() if v == region}
        assert report.get("/api/v1/records", date=day, region=NOWHERE).json() == {"records": [],
                                                                                  "next_cursor": None}
    # Paged: each page of one region's records holds that region's only.
    first = report.get("/api/v1/records", region="south", status="archived", limit=1).json()
    second = report.get("/api/v1/records", region="south", status="archived", limit=1,
                        cursor=first["next_cursor"]).json()
    assert [r["region"] for r in first["records"] + second["records"]] == ["south", "south"]
    # The seed contract's list: the region as an added field, and as a filter.
    south = report.get("/api/v1/fiscal/records", region="south", limit=1000).json()
    assert south["count"] > 0 and {r["region"] for r in south["records"]} == {"south"}
    assert flowed.rejected in {r["record_id"] for r in south["records"]}
    assert flowed.pending not in {r["record_id"] for r in south["records"]}
    rejected = report.get("/api/v1/fiscal/records", region="south", status="rejected", limit=1000).json()
    assert {r["status"] for r in rejected["records"]} == {"rejected"}
    assert flowed.rejected in {r["record_id"] for r in rejected["records"]}
    assert report.get("/api/v1/fiscal/records", region=NOWHERE).json() == {"count": 0, "records": []}
    # The record view and its audit history name the region too.
    rid = next(iter(flowed.invs))
    record = report.get(f"/api/v1/records/{rid}").json()
    assert record["region"] == flowed.region[rid]
    assert record["history"][-1]["to_status"] == "archived"
    assert record["history"][-1]["detail"]["region"] == flowed.region[rid]
    # A region is a name: empty or with control characters is a 400 that says which parameter.
    for path in ("/api/v1/records", "/api/v1/fiscal/records", "/api/v1/reports/summary", "/api/v1/reports/trend"):
        for bad in ("", "nor\x00th", "x" * 101):
            resp = report.get(path, region=bad)
            assert resp.status_code == 400 and "region" in resp.json()["detail"], (path, bad, resp.text)
    for params in ({"from": flowed.days[0]}, {"to": flowed.days[0]}, {"from": flowed.days[1], "to": flowed.days[0]}):
        resp = report.get("/api/v1/reports/regions", **params)
        assert resp.status_code == 400 and resp.json()["error"] == "bad_request", (params, resp.text)
    spec = report.get("/openapi.json", token=None).json()
    assert "region" in {p["name"] for p in spec["paths"]["/api/v1/fiscal/records"]["get"]["parameters"]}
    schema = spec["paths"]["/api/v1/reports/regions"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schema["schema"]["$ref"].endswith("/RegionsReport")
    regions = report.get("/api/v1/reports/regions").json()
    assert list(spec["components"]["schemas"]["RegionsReport"]["properties"]) == list(regions)
    assert list(spec["components"]["schemas"]["RegionTotals"]["properties"]) == list(regions["regions"][0])


def test_report_regions_prints_a_table_per_region_with_the_total(report: ReportProc, flowed: Flowed) -> None:
    span = ["--from", flowed.days[0], "--to", flowed.days[-1]]
    out = report.cli("regions", *span, "--json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == report.get("/api/v1/reports/regions", **{"from": flowed.days[0],
                                                                                "to": flowed.days[-1]}).json()
    table = report.cli("regions")
    assert table.returncode == 0, table.stderr
    # One row per region and the total: documents, total MXN (rounded to centavos), rejected, duplicate.
    rows = {name: re.findall(r"\d+(?:\.\d+)?", next(line for line in table.stdout.splitlines() if name in line))
            for name in ("north", "south", "all regions")}
    mxn = {r: money(sum((inv.total_mxn for rid, inv in flowed.invs.items() if flowed.region[rid] == r), D(0)))
           for r in REGIONS}
    every = money(sum((inv.total_mxn for inv in flowed.invs.values()), D(0)))  # rounded once, not per region
    assert rows == {"north": ["9", mxn["north"], "0", "0"], "south": ["5", mxn["south"], "1", "0"],
                    "all regions": [str(len(flowed.invs)), every, "1", "0"]}, table.stdout
    # The other reports narrowed to a region, as tables and as the API's JSON.
    day = flowed.days[0]
    out = report.cli("daily", day, "--region", "south", "--json")
    assert out.returncode == 0 and orjson.loads(out.stdout) == report.get("/api/v1/reports/daily", date=day,
                                                                          region="south").json()
    out = report.cli("daily", day, "--region", NOWHERE)
    assert out.returncode == 0, out.stderr
    assert " ".join(out.stdout.split()) == f"No archived documents dated {day} from region {NOWHERE}: nothing " \
                                           "to report for that day."  # (wrapped at the terminal's width)
    out = report.cli("summary", "--region", "south", "--json")
    assert out.returncode == 0 and orjson.loads(out.stdout)["by_status"]["rejected"] == 1, out.stdout
    out = report.cli("trend", "--hours", "2", "--region", "north", "--json")
    assert out.returncode == 0 and orjson.loads(out.stdout)["region"] == "north", out.stdout
    out = report.cli("verify", *span, "--settle", "0")
    assert out.returncode == 0 and "consistent" in out.stdout, (out.stdout, out.stderr)


# ---------------------------------------------------------------- a report database from before regions

# The report tables as a release before issue 18 created them (services/report/schema.py then).
OLD_DDL = [
    """CREATE TABLE archived (
        record_id String, uuid String, issuer_rfc LowCardinality(String), receiver_rfc String,
        day Date, fecha String, tipo LowCardinality(String), moneda LowCardinality(String),
        tipo_cambio Decimal(38, 6), total Decimal(38, 6), total_mxn Decimal(38, 12), job_id String, s3_key String,
        archived_at DateTime64(3, 'UTC'), version UInt64
    ) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(day) ORDER BY (day, issuer_rfc, uuid)""",
    """CREATE TABLE daily_totals (
        day Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        n UInt64, total Decimal(38, 6), total_mxn Decimal(38, 12)
    ) ENGINE = SummingMergeTree ORDER BY (day, issuer_rfc, tipo, moneda) SETTINGS index_granularity = 1024""",
    """CREATE MATERIALIZED VIEW daily_totals_mv TO daily_totals AS
        SELECT day, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn FROM archived""",
    """CREATE TABLE monthly_totals (
        month Date, issuer_rfc LowCardinality(String), tipo LowCardinality(String), moneda LowCardinality(String),
        n UInt64, total Decimal(38, 6), total_mxn Decimal(38, 12)
    ) ENGINE = SummingMergeTree ORDER BY (month, issuer_rfc, tipo, moneda) SETTINGS index_granularity = 1024""",
    """CREATE MATERIALIZED VIEW monthly_totals_mv TO monthly_totals AS
        SELECT toStartOfMonth(day) AS month, issuer_rfc, tipo, moneda, toUInt64(1) AS n, total, total_mxn
        FROM archived""",
    """CREATE TABLE hourly_totals (hour DateTime('UTC'), n UInt64, total_mxn Decimal(38, 12))
        ENGINE = SummingMergeTree ORDER BY hour""",
    """CREATE MATERIALIZED VIEW hourly_totals_mv TO hourly_totals AS
        SELECT toStartOfHour(archived_at) AS hour, toUInt64(1) AS n, total_mxn FROM archived""",
    """CREATE TABLE record_outcomes (
        record_id String, outcome LowCardinality(String), reason LowCardinality(String), job_id String,
        sign Int8, version UInt64
    ) ENGINE = ReplacingMergeTree(version) ORDER BY record_id""",
    """CREATE TABLE status_counts (outcome LowCardinality(String), reason LowCardinality(String), n Int64)
        ENGINE = SummingMergeTree ORDER BY (outcome, reason)""",
    """CREATE MATERIALIZED VIEW status_counts_mv TO status_counts AS
        SELECT outcome, reason, toInt64(sign) AS n FROM record_outcomes""",
    """CREATE TABLE dead_letters (
        record_id String, stage LowCardinality(String), reason LowCardinality(String), error String,
        details String, origin_topic String, attempt UInt32, job_id String,
        failed_at DateTime64(3, 'UTC'), version UInt64, letter_id String
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (record_id, letter_id)""",
]

# Run in a process of its own (chDB: one data directory per process): the old tables, with the
# rows an old report service wrote for the records given (JSON on stdin).
_OLD_WRITER = """
import datetime as dt, json, sys
from decimal import Decimal
from services.report.sink import connect
spec = json.load(sys.stdin)
client = connect(spec["dsn"])
for stmt in spec["ddl"]:
    client.command(stmt)
client.insert("archived", [[r["record_id"], r["uuid"], r["issuer_rfc"], r["receiver_rfc"],
                            dt.date.fromisoformat(r["day"]), r["fecha"], r["tipo"], r["moneda"],
                            Decimal(r["tipo_cambio"]), Decimal(r["total"]), Decimal(r["total_mxn"]), "", r["s3_key"],
                            dt.datetime.fromisoformat(r["archived_at"]), r["version"]] for r in spec["archived"]],
              column_names=["record_id", "uuid", "issuer_rfc", "receiver_rfc", "day", "fecha", "tipo", "moneda",
                            "tipo_cambio", "total", "total_mxn", "job_id", "s3_key", "archived_at", "version"])
client.insert("record_outcomes", [[o["record_id"], o["outcome"], o["reason"], "", 1, o["version"]]
                                  for o in spec["outcomes"]],
              column_names=["record_id", "outcome", "reason", "job_id", "sign", "version"])
"""


def _old_report_database(dsn: str, rows: list[asyncpg.Record]) -> None:
    archived = [{"record_id": r["record_id"], "uuid": r["tfd_uuid"].upper(), "issuer_rfc": r["issuer_rfc"].upper(),
                 "receiver_rfc": r["receiver_rfc"], "day": r["issued_on"].isoformat(), "fecha": r["fecha"],
                 "tipo": r["tipo"], "moneda": r["moneda"], "tipo_cambio": str(r["tipo_cambio"]),
                 "total": str(r["total"]), "total_mxn": str(r["total_mxn"]), "s3_key": r["s3_key"],
                 "archived_at": r["archived_at"].isoformat(), "version": int(r["archived_at"].timestamp() * 1000)}
                for r in rows if r["status"] == "archived"]
    outcomes = [{"record_id": r["record_id"], "outcome": r["status"], "reason": r["reason"] or "",
                 "version": int(r["updated_at"].timestamp() * 1000)} for r in rows]
    spec = json.dumps({"dsn": dsn, "ddl": OLD_DDL, "archived": archived, "outcomes": outcomes})
    out = subprocess.run([sys.executable, "-c", _OLD_WRITER], input=spec, text=True, capture_output=True,
                         cwd=PROJECT_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


def test_an_old_report_database_is_upgraded_and_a_rebuild_moves_its_rows_to_their_regions(
        stack_settings: Settings, tmp_path: Path) -> None:
    pki = DemoPKI.ensure(tmp_path / "pki", issuers=3)
    upgrade_day = asyncio.run(_unused_days(stack_settings, 1))
    gen = InvoiceGenerator(pki, seed=random.randrange(1 << 30), start=upgrade_day, days=1)
    run = f"regup-{random.randrange(1 << 32):08x}"
    invs = {f"{run}-{i}": gen.generate(i, defect=None) for i in range(6)}
    region = {rid: ("north", "south", "central")[i % 3] for i, rid in enumerate(invs)}
    rejected = f"{run}-rejected"

    async def archive() -> list[asyncpg.Record]:
        # Archived by the store stage as before: the registry and S3 hold them (a rebuild reads the
        # documents for their lines), and their stored events go to topics no report service reads.
        await _through_store(stack_settings, Topics.create(stack_settings), invs, region,
                             [Registration(rejected, "central", f"t/{rejected}.xml")])
        conn = await _pg(stack_settings)
        try:
            assert await apply_transitions(conn, [Transition(
                rejected, RecordStatus.REJECTED, (RecordStatus.PENDING,), "download", "test", f"{rejected}:r",
                reason="FILE_NOT_FOUND", last_error="test")]) == [True]
            return list(await conn.fetch("SELECT * FROM fiscal_records WHERE record_id = ANY($1::text[])",
                                         [*invs, rejected]))
        finally:
            await conn.close()

    rows = asyncio.run(archive())
    _old_report_database(f"chdb://{tmp_path}/ch", rows)
    day = upgrade_day.isoformat()
    mxn = sum(inv.total_mxn for inv in invs.values())

    with running_report(stack_settings, tmp_path) as rp:
        assert "have no region column" in rp.log.read_text()
        # Upgraded in place: the all-regions figures are as before, under region '' (not known).
        assert _daily(rp, day)[:2] == (len(invs), mxn)
        assert _daily(rp, day, "north")[0] == 0
        every = rp.get("/api/v1/reports/regions").json()["regions"]
        assert [(r["region"], r["record_count"], r["rejected"]) for r in every] == [("", len(invs), 1)]
        # verify sees the rows under the wrong region: its own and the unknown one differ.
        failed = rp.cli("verify", "--from", day, "--to", day, "--settle", "0", "--json")
        assert failed.returncode == 1, failed.stdout
        diffs = {(c["region"], c["postgres"], c["clickhouse"]) for c in json.loads(failed.stdout)["cells"]
                 if c["differs"]}
        assert diffs == {("", 0, len(invs)), ("north", 2, 0), ("south", 2, 0), ("central", 2, 0)}

        rebuilt = rp.cli("rebuild", "--from", day, "--to", day, "--rate", "0", "--json")
        assert rebuilt.returncode == 0, (rebuilt.stdout, rebuilt.stderr)
        step = json.loads(rebuilt.stdout)
        assert step["regions_set"] == len(invs) and step["archived_rows"] == 0, step

        ok = rp.cli("verify", "--from", day, "--to", day, "--settle", "0")
        assert ok.returncode == 0 and "consistent" in ok.stdout, (ok.stdout, ok.stderr)
        assert _daily(rp, day)[:2] == (len(invs), mxn)  # nothing counted twice
        for r in ("north", "south", "central"):
            assert _daily(rp, day, r)[:2] == (2, sum(inv.total_mxn for rid, inv in invs.items() if region[rid] == r))
            assert rp.get("/api/v1/reports/summary", region=r).json()["by_status"]["archived"] == 2
        trend = rp.get("/api/v1/reports/trend", hours=2, region="south").json()  # archived a moment ago
        assert sum(p["count"] for p in trend["points"]) == 2
        by_region = {r["region"]: r for r in rp.get("/api/v1/reports/regions", **{"from": day, "to": day})
                     .json()["regions"]}
        assert {r: v["record_count"] for r, v in by_region.items()} == {"central": 2, "north": 2, "south": 2}

        # Run again: nothing to write.  And the rejection's region comes with its next dead letter
        # (a day's rebuild covers archived records only), from the registry.
        again = json.loads(rp.cli("rebuild", "--from", day, "--to", day, "--rate", "0", "--json").stdout)
        assert (again["repaired"], again["regions_set"], again["present"]) == (0, 0, len(invs)), again
        rp.topics.produce(DLQ, [(rejected, b"{}")], headers={H.REASON: "FILE_NOT_FOUND", H.STAGE: "download"})
        rp.wait_until(lambda: {r["region"]: r["rejected"] for r in rp.get("/api/v1/reports/regions")
                               .json()["regions"]} == {"central": 1, "north": 0, "south": 0})
        assert rp.get("/api/v1/reports/summary").json()["by_status"]["rejected"] == 1  # moved, not added

    # Started again: nothing left to upgrade, and the summing tables agree with their base tables.
    with running_report(stack_settings, tmp_path) as rp:
        log = rp.log.read_text()
        assert "have no region column" not in log and "disagrees with its base table" not in log, log[-3000:]
        assert _daily(rp, day, "central")[0] == 2
