"""``fiscalflow demo``: the whole pipeline on the local stack, on generated invoices.

Starts the stack and the five services, generates signed and stamped invoices (a few percent
deliberately bad) on the three regional issuers, submits one job per region through the ingest
API, follows them with live progress bars, then prints the reports and where to look next.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import typer

from shared.cli.api_client import bearer
from shared.domain.records import FINAL_STATUSES

if TYPE_CHECKING:
    from rich.console import Console

    from shared.settings import Settings


@functools.cache
def _console() -> Console:
    """The terminal's rich console, made on first use: httpx, rich and the settings are imported by
    the demo when it runs, not by every ``fiscalflow`` start-up."""
    from rich.console import Console

    return Console()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        count: int = typer.Option(10_000, min=1, help="Invoices to generate across the three regions."),
        bad_fraction: float = typer.Option(0.03, min=0.0, max=0.5, help="Fraction deliberately bad."),
        seed: int | None = typer.Option(None, help="Generator seed (default: a new one each run)."),
        timeout: float = typer.Option(1800, help="Seconds to wait for the jobs."),
        stop: bool = typer.Option(False, "--stop", help="Stop the local stack and exit."),
    ) -> None:
        """Run the whole pipeline on generated invoices, with live progress and the reports."""
        from shared.settings import Settings

        settings = Settings()
        if stop:
            from tooling.stack import LocalStack

            LocalStack(settings).down()
            _console().print("stack stopped")
            return
        run_demo(settings, count, bad_fraction, seed if seed is not None else int(time.time()), timeout)


def run_demo(settings: Settings, count: int, bad_fraction: float, seed: int, timeout: float) -> None:
    from tooling.issuers import cli as issuers
    from tooling.stack import LocalStack

    console = _console()
    started = time.monotonic()
    console.rule("[bold]fiscalflow demo")
    console.print("1/4 starting the local stack and the five services …")
    from shared.topics import Stage

    LocalStack(settings).up(services=list(Stage))
    batch = time.strftime("demo-%Y%m%d-%H%M%S")
    console.print(f"2/4 generating {count:,} invoices on the regional issuers (batch {batch}) …")
    issuers.generate(count=count, region=None, bad_fraction=bad_fraction, seed=seed, batch=batch, start=None,
                     days=7, workers=0)
    console.print("3/4 submitting one job per region …")
    ingest = f"http://127.0.0.1:{settings.ingest_port}"
    before = final_counts(_report(settings, "/api/v1/reports/summary"))
    jobs = submit_jobs(settings, ingest, batch)
    t_jobs = time.monotonic()
    final = follow(settings, ingest, jobs, timeout)
    elapsed = time.monotonic() - t_jobs
    done = sum(s["finished"] for s in final.values())
    console.print(f"4/4 {done:,} records finished in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.0f} records/s)")
    behind = wait_for_reports(settings, before, final, timeout_s=10 + 3 * settings.report_flush_s)
    if behind:
        missing = ", ".join(f"{s} {n:,}" for s, n in sorted(behind.items()))
        console.print(f"[yellow]the reports do not count {sum(behind.values()):,} of these records yet ({missing});"
                      " they show what they hold[/yellow]")
    print_reports(settings, batch)
    record_result(count, done, elapsed, time.monotonic() - started, final)
    where_next(settings, list(jobs))


def _wait_ready(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _console().print(f"[red]{url} did not answer within {timeout:.0f} s; see .local/logs/[/red]")
            raise typer.Exit(1) from None
        time.sleep(0.3)


def submit_jobs(settings: Settings, ingest: str, batch: str) -> dict[str, str]:
    import httpx

    _wait_ready(f"{ingest}/openapi.json")
    headers = bearer(settings, admin=True)  # submitting is the admin token's; the rest reads
    jobs: dict[str, str] = {}
    for region in settings.regions():
        resp = httpx.post(f"{ingest}/api/v1/jobs", headers=headers, timeout=120,
                          json={"source": {"region": region, "pattern": f"{batch}/*.xml"}})
        if resp.status_code != 202:
            _console().print(f"[red]job for {region} refused: {resp.status_code} {resp.text}[/red]")
            raise typer.Exit(1)
        jobs[resp.json()["job_id"]] = region
    return jobs


def follow(settings: Settings, ingest: str, jobs: dict[str, str], timeout: float) -> dict[str, dict[str, Any]]:
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn())
    status: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    console = _console()
    with httpx.Client(timeout=30, headers=bearer(settings)) as client, Progress(*columns, console=console) as progress:
        tasks = {job: progress.add_task(region, total=None, counts="") for job, region in jobs.items()}
        while True:
            for job, task in tasks.items():
                st = client.get(f"{ingest}/api/v1/jobs/{job}").json()
                status[job] = st
                counts = "  ".join(f"{k} {v}" for k, v in sorted(st["counts"].items()))
                progress.update(task, total=st["record_count"], completed=st["finished"], counts=counts)
            if all(s["status"] == "completed" for s in status.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return status


def _report(settings: Settings, path: str, **params: Any) -> dict[str, Any]:
    import httpx

    url = f"http://127.0.0.1:{settings.report_port}{path}"
    _wait_ready(f"http://127.0.0.1:{settings.report_port}/openapi.json")
    body: dict[str, Any] = httpx.get(url, params=params, headers=bearer(settings), timeout=30).json()
    return body


def final_counts(summary: dict[str, Any]) -> Counter[str]:
    """The records the reports count per final status (``/api/v1/reports/summary``)."""
    by_status = summary.get("by_status", {})
    return Counter({s.value: int(by_status.get(s.value, 0)) for s in FINAL_STATUSES})


def reports_behind(before: Counter[str], now: Counter[str], jobs: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Per final status, how many of the jobs' finished records the reports do not count yet: the
    jobs' counts (from PostgreSQL) against what the summary gained since ``before`` (read before
    the jobs were submitted, so records of earlier runs on the same stack do not count)."""
    behind = {}
    for status in sorted(s.value for s in FINAL_STATUSES):
        expected = sum(int(st.get("counts", {}).get(status, 0)) for st in jobs.values())
        if (missing := expected - (now[status] - before[status])) > 0:
            behind[status] = missing
    return behind


def wait_for_reports(settings: Settings, before: Counter[str], jobs: dict[str, dict[str, Any]],
                     timeout_s: float) -> dict[str, int]:
    """Wait until the reports count every finished record of ``jobs`` (the report service writes a
    batch every ``report_flush_s`` at most); what is still missing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        behind = reports_behind(before, final_counts(_report(settings, "/api/v1/reports/summary")), jobs)
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(0.5)


def print_reports(settings: Settings, batch: str) -> None:
    from rich.table import Table

    console = _console()
    summary = _report(settings, "/api/v1/reports/summary")
    t = Table(title="records by status")
    t.add_column("status")
    t.add_column("records", justify="right")
    for k, n in summary["by_status"].items():
        t.add_row(k, f"{n:,}")
    console.print(t)

    today = dt.date.today()
    days = [(today - dt.timedelta(days=d)).isoformat() for d in range(8)]
    dailies = {d: _report(settings, "/api/v1/reports/daily", date=d) for d in days}
    # A day without archived documents is a 404 (no "groups"): an empty day here.
    busiest = max(dailies, key=lambda d: sum(g["count"] for g in dailies[d].get("groups", [])))
    day = dailies[busiest]
    t = Table(title=f"daily report {busiest} (archived, by TipoDeComprobante and Moneda)")
    for col in ("tipo", "moneda", "count", "total", "total MXN"):
        t.add_column(col, justify="left" if col in ("tipo", "moneda") else "right")
    for g in day.get("groups", []):
        t.add_row(g["tipo"], g["moneda"], f"{g['count']:,}", g["total"], g["total_mxn"])
    console.print(t)

    issuers = _report(settings, "/api/v1/reports/issuers", **{"from": days[-1], "to": days[0]})
    counts: Counter[str] = Counter()
    sums: dict[str, Decimal] = {}
    for i in issuers["issuers"]:
        for g in i["groups"]:
            counts[i["rfc"]] += g["count"]
            sums[i["rfc"]] = sums.get(i["rfc"], Decimal(0)) + Decimal(g["total_mxn"])
    t = Table(title="top issuers, last 7 days (MXN)")
    for col in ("issuer RFC", "documents", "total MXN"):
        t.add_column(col, justify="left" if col == "issuer RFC" else "right")
    for rfc, total in sorted(sums.items(), key=lambda kv: -kv[1])[:10]:
        t.add_row(rfc, f"{counts[rfc]:,}", f"{total:,.2f}")
    console.print(t)

    t = Table(title="dead letters by reason")
    t.add_column("reason")
    t.add_column("records", justify="right")
    for reason, n in sorted(summary["by_reason"].items(), key=lambda kv: -kv[1]):
        t.add_row(reason, f"{n:,}")
    console.print(t)


def record_result(count: int, done: int, jobs_s: float, wall_s: float, final: dict[str, dict[str, Any]]) -> None:
    from tooling.bench_results import Measurement, append_result

    outcomes: Counter[str] = Counter()
    for st in final.values():
        outcomes.update(st["counts"])
    table = "\n".join([
        "| generated | records finished | jobs wall s | records/s | demo wall s (incl. install-free start, generation) "
        "| outcomes |",
        "|---|---|---|---|---|---|",
        f"| {count} | {done} | {jobs_s:.1f} | {done / max(jobs_s, 1e-9):.0f} | {wall_s:.1f} | "
        + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) + " |",
    ])
    rate = done / max(jobs_s, 1e-9)
    figures = {"count": count, "finished": done, "jobs_s": jobs_s, "docs_per_s": rate, "wall_s": wall_s,
               **{f"outcome.{k}": v for k, v in outcomes.items()}}
    summary = f"{done:,} of {count:,} records final in {jobs_s:.1f} s ({rate:,.0f} records/s), demo {wall_s:.1f} s"
    append_result("demo", f"fiscalflow demo --count {count}", table,
                  note="every service and server on this machine; records/s from job submission to the last "
                  "record in a final state", measured=[Measurement("demo", figures, summary, {"count": count})])


def where_next(settings: Settings, jobs: list[str]) -> None:
    from rich.panel import Panel

    ingest = f"http://127.0.0.1:{settings.ingest_port}"
    report = f"http://127.0.0.1:{settings.report_port}"
    _console().print(Panel.fit("\n".join([
        f"ingest API   {ingest}/docs   (jobs: {ingest}/api/v1/jobs/{jobs[0]})",
        f"report API   {report}/docs   ({report}/api/v1/reports/summary)",
        "stack        fiscalflow stack status      (logs: .local/logs/, metrics: ops URLs in status)",
        "reports      fiscalflow report summary | daily YYYY-MM-DD | issuers --from D | trend",
        "dead letters fiscalflow dlq stats | list --reason TOTAL_MISMATCH | replay --dry-run --all",
        "a record     curl -H \"Authorization: Bearer ${FISCALFLOW_READ_TOKEN:-fiscalflow-dev-read-token}\" "
        f"'{report}/api/v1/records?status=rejected&limit=5'",
        "             (the APIs need a token: the read token reads, FISCALFLOW_API_TOKEN also submits; /docs: "
        "Authorize)",
        "more         fiscalflow issuer generate --count 1000 && fiscalflow job submit --region north "
        "--pattern '<batch>/*.xml' --wait",
        "stop         fiscalflow demo --stop    (or: fiscalflow stack down)",
    ]), title="where to look next"))
