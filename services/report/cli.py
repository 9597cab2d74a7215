"""``fiscalflow report summary|daily|issuers|trend|regions``: the report API as rich tables (or
``--json``; every one but ``regions`` narrowed to one issuer region by ``--region``); ``report
verify`` and ``report rebuild``: the report tables against the system of record."""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import TYPE_CHECKING, Any

import orjson
import typer

from shared.cli.api_client import Api, ReportUrl, Token, api, call, checked, unreachable
from shared.cli.chart import bar
from shared.cli.money import money

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Reports from the report service's API.")


@functools.cache
def _console() -> Console:
    """The terminal's rich console, made on first use: rich is imported by the commands that print,
    not by every ``fiscalflow`` start-up."""
    from rich.console import Console

    return Console()

JsonOpt = typer.Option(False, "--json", help="Print the API's JSON instead of tables.")
RegionOpt = typer.Option(None, "--region", help="Only the records of this issuer region (e.g. north).")
NO_REGION = "(not known)"  # report rows written before the reports kept regions, until a rebuild


def _get(target: Api, path: str, **params: Any) -> dict[str, Any]:
    return _request(target, path, params)


def _request(target: Api, path: str, params: dict[str, Any], absent_ok: bool = False) -> dict[str, Any]:
    """GET ``path``; an unreachable API, a refusal or an answer that is not JSON exits 1 in one line.
    ``absent_ok``: a 404 is an answer (its body returned, with ``error``), not a refusal."""
    return call(target, "GET", path, ok=(200, 404) if absent_ok else (200,), timeout=120,
                params={k: v for k, v in params.items() if v is not None})


def _print_json(body: dict[str, Any]) -> None:
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


def _groups_table(title: str, groups: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    t = Table(title=title)
    for col in ("tipo", "moneda", "count", "total", "total_mxn"):
        t.add_column(col, justify="right" if col in ("count", "total", "total_mxn") else "left")
    for g in groups:
        t.add_row(g["tipo"], g["moneda"], str(g["count"]), money(g["total"], g["moneda"]), money(g["total_mxn"]))
    return t


@app.command()
def summary(job_id: str | None = typer.Option(None, "--job-id", help="Only this job's records."),
            region: str | None = RegionOpt, as_json: bool = JsonOpt, url: ReportUrl = None,
            token: Token = None) -> None:
    """Records by status and rejections by reason code."""
    body = _get(api("report", url, token), "/api/v1/reports/summary", job_id=job_id, region=region)
    if as_json:
        return _print_json(body)
    from rich.table import Table

    for title, data in (("by status", body["by_status"]), ("by reason", body["by_reason"])):
        t = Table(title=title)
        t.add_column("")
        t.add_column("records", justify="right")
        for k, n in data.items():
            t.add_row(k, str(n))
        _console().print(t)
    return None


@app.command()
def daily(date: str = typer.Argument(..., help="YYYY-MM-DD (date part of Fecha as written)."),
          region: str | None = RegionOpt, as_json: bool = JsonOpt, url: ReportUrl = None,
          token: Token = None) -> None:
    """One day's archived documents per TipoDeComprobante and Moneda, and per issuer (a day
    without any says so and exits 0; with ``--json``, the API's 404 body)."""
    body = _request(api("report", url, token), "/api/v1/reports/daily", {"date": date, "region": region},
                    absent_ok=True)
    if as_json:
        return _print_json(body)
    of_region = f" from region {region}" if region is not None else ""
    if "error" in body:
        _console().print(f"No archived documents dated {date}{of_region}: nothing to report for that day.",
                      highlight=False)
        return None
    _console().print(_groups_table(f"{body['date']}{of_region} — {body['record_count']} documents, "
                                f"{money(body['total_amount'])} MXN", body["groups"]))
    from rich.table import Table

    t = Table(title="issuers")
    for col in ("rfc", "count", "total_mxn"):
        t.add_column(col, justify="left" if col == "rfc" else "right")
    for i in body["issuers"]:
        t.add_row(i["rfc"], str(i["count"]), money(i["total_mxn"]))
    _console().print(t)
    return None


@app.command()
def issuers(start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
            end: str = typer.Option(dt.date.today().isoformat(), "--to", help="Last day, YYYY-MM-DD."),
            region: str | None = RegionOpt, as_json: bool = JsonOpt, url: ReportUrl = None,
            token: Token = None) -> None:
    """Per issuer, per TipoDeComprobante and Moneda, over a range of days."""
    body = _get(api("report", url, token), "/api/v1/reports/issuers", **{"from": start, "to": end, "region": region})
    if as_json:
        return _print_json(body)
    for i in body["issuers"]:
        _console().print(_groups_table(i["rfc"], i["groups"]))
    return None


@app.command()
def trend(hours: int = typer.Option(24, help="Hours back from now."), region: str | None = RegionOpt,
          as_json: bool = JsonOpt, url: ReportUrl = None, token: Token = None) -> None:
    """Archived count and MXN total per hour of processing time, with a bar chart of the counts."""
    body = _get(api("report", url, token), "/api/v1/reports/trend", hours=hours, region=region)
    if as_json:
        return _print_json(body)
    # the bar takes what the hour, the count and the total leave of the terminal's width
    _console().print(_trend_chart(body["points"], hours, width=max(10, min(50, _console().width - 50))))
    return None


@app.command()
def regions(start: str | None = typer.Option(None, "--from", help="First day of Fecha, YYYY-MM-DD (with --to; "
                                             "neither: every day, with rejections)."),
            end: str | None = typer.Option(None, "--to", help="Last day of Fecha, YYYY-MM-DD, inclusive."),
            as_json: bool = JsonOpt, url: ReportUrl = None, token: Token = None) -> None:
    """Per issuer region: archived documents and their MXN total (and, over every day, the rejected
    and duplicate records), with the total of all regions."""
    body = _get(api("report", url, token), "/api/v1/reports/regions", **{"from": start, "to": end})
    if as_json:
        return _print_json(body)
    _console().print(_regions_table(body))
    return None


def _regions_table(body: dict[str, Any]) -> Table:
    from rich.table import Table

    every_day = body["from"] is None
    t = Table(title="archived per region, " + ("every day" if every_day else f"{body['from']}..{body['to']}"),
              caption=None if body["regions"] else "nothing archived")
    cols = ["region", "documents", "total MXN"] + (["rejected", "duplicate"] if every_day else [])
    for col in cols:
        t.add_column(col, justify="left" if col == "region" else "right")
    for r in body["regions"]:
        t.add_row(r["region"] or NO_REGION, str(r["record_count"]), money(r["total_mxn"]),
                  *([str(r["rejected"]), str(r["duplicate"])] if every_day else []))
    t.add_section()
    t.add_row("all regions", str(body["record_count"]), money(body["total_mxn"]),
              *([str(sum(r["rejected"] for r in body["regions"])), str(sum(r["duplicate"] for r in body["regions"]))]
                if every_day else []), style="bold")
    return t


def _trend_chart(points: list[dict[str, Any]], hours: int, width: int) -> Table:
    """One row per hour: the hour, a bar of its archived count (the busiest hour fills ``width``), the
    count and the MXN total."""
    from rich.table import Table

    peak = max((int(p["count"]) for p in points), default=0)
    t = Table(title=f"last {hours} h: archived documents per hour", caption=None if points else "nothing archived")
    t.add_column("hour")
    t.add_column("archived", min_width=width, no_wrap=True, style="cyan")
    for col in ("count", "total_mxn"):
        t.add_column(col, justify="right")
    for p in points:
        hour = str(p["hour"]).replace("T", " ")[:16]  # 2025-03-01 10:00
        t.add_row(hour, bar(int(p["count"]), peak, width), str(p["count"]), money(p["total_mxn"]))
    return t


# ---------------------------------------------------------------- verify and rebuild

FromOpt = typer.Option(None, "--from", help="First day of Fecha, YYYY-MM-DD (default: every record).")
ToOpt = typer.Option(None, "--to", help="Last day of Fecha, YYYY-MM-DD, inclusive.")


@app.command()
def verify(start: str | None = FromOpt, end: str | None = ToOpt,
           settle: float = typer.Option(60.0, "--settle", min=0, help="Leave out records archived or rejected "
                                        "in the last S seconds (still on their way to the reports)."),
           as_json: bool = JsonOpt, url: ReportUrl = None, token: Token = None) -> None:
    """Compare PostgreSQL's records with the report tables per day and status; exit 1 if they differ."""
    body = _get(api("report", url, token), "/api/v1/reports/verify",
                **{"from": start, "to": end, "settle_s": settle})
    if as_json:
        _print_json(body)
    else:
        diffs = [c for c in body["cells"] if c["differs"]]
        if diffs:
            from rich.table import Table

            t = Table(title=f"{len(diffs)} differences ({body['records_off']} records off)")
            t.caption = "PG: PostgreSQL (the record), CH: ClickHouse (the reports)"
            for col in ("day", "region", "status", "reason", "PG", "CH", "PG MXN", "CH MXN"):
                left = col in ("day", "region", "status", "reason")
                t.add_column(col, justify="left" if left else "right", no_wrap=col != "reason",
                             overflow="fold")
            for c in diffs:
                region = c.get("region")  # None: a report service from before regions
                t.add_row(c["day"] or "(all)", NO_REGION if region == "" else region or "", c["status"], c["reason"],
                          str(c["postgres"]), str(c["clickhouse"]), money(c["postgres_mxn"]),
                          money(c["clickhouse_mxn"]))
            _console().print(t)
            _console().print("[yellow]the reports differ from the record: `fiscalflow report rebuild` "
                          "re-materialises them[/yellow]")
        else:
            archived = sum(c["postgres"] for c in body["cells"] if c["day"])
            _console().print(f"[green]consistent[/green]: {body['days']} days, {archived} archived records"
                          + ("" if body["complete"] else f" ({body['from'] or '…'}..{body['to'] or '…'})")
                          + f", checked in {body['seconds']:.2f} s")
    if not body["consistent"]:
        raise typer.Exit(1)


@app.command()
def rebuild(start: str | None = FromOpt, end: str | None = ToOpt,
            dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be written; write nothing."),
            rate: float = typer.Option(1000.0, "--rate", min=0, help="At most N records per second (0: no limit)."),
            batch: int = typer.Option(500, "--batch", min=1, max=5000, help="Records per step."),
            restart: bool = typer.Option(False, "--restart", help="Start over instead of resuming an unfinished "
                                         "rebuild of the same days."),
            lines: bool = typer.Option(True, "--lines/--no-lines", help="Also restore invoice lines from the "
                                       "archived documents (an S3 read per record lacking them). --no-lines: the "
                                       "totals alone from PostgreSQL, fast; run again with --restart for the lines."),
            as_json: bool = JsonOpt, url: ReportUrl = None, token: Token = None) -> None:
    """Re-materialise the report tables from PostgreSQL and the archived documents (S3), through
    the report service; idempotent, resumable (run it again after a crash), safe while the
    pipeline runs."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    scope = {"from": start, "to": end}
    target = api("report", url, token, admin=True)
    plan = _request(target, "/api/v1/reports/rebuild", scope)
    cp = plan["checkpoint"] or {}
    resumed = 0 if restart or dry_run or not plan["resumes"] else int(cp.get("scanned", 0))
    if resumed and not as_json:
        _console().print(f"resuming the rebuild started {cp['started_at']}: {resumed} records done")
    totals = {k: 0 for k in ("scanned", "present", "repaired", "archived_rows", "outcome_rows", "from_postgres",
                             "from_s3", "lines_from_s3", "line_rows", "regions_set")}
    missing: list[str] = []
    after: str | None = "" if dry_run else None
    first = True
    started = time.monotonic()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=Console(stderr=True), disable=as_json)
    with progress:
        task = progress.add_task("dry run" if dry_run else "rebuilding", total=plan["total"], completed=resumed)
        while True:
            body = {**scope, "limit": batch, "dry_run": dry_run, "restart": restart and first}
            if not lines:  # sent only when off: a report service older than line items accepts the step
                body["lines"] = False
            if after is not None:
                body["after"] = after
            step = _post_step(target, body)
            first = False
            for k in totals:
                totals[k] += int(step.get(k, 0))  # a report service older than line items has no line counts
            missing += step["missing"]
            progress.advance(task, step["scanned"])
            if dry_run:
                after = step["after"]
            if step["finished"]:
                break
            if rate > 0:  # the average since the start stays under the rate
                ahead = totals["scanned"] / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    elapsed = time.monotonic() - started
    result = {**totals, "missing": missing, "dry_run": dry_run, "seconds": round(elapsed, 2),
              "records_per_s": round(totals["scanned"] / elapsed, 1) if elapsed > 0 else None,
              "resumed_after": resumed}
    if as_json:
        _print_json(result)
    else:
        verb = "would write" if dry_run else "wrote"
        _console().print(f"{totals['scanned']} records in {elapsed:.1f} s ({result['records_per_s']}/s): "
                      f"{totals['present']} already in the reports, {verb} {totals['repaired']} "
                      f"({totals['from_postgres']} from PostgreSQL, {totals['from_s3']} "
                      f"{'to read' if dry_run else 'read'} from S3; {totals['lines_from_s3']} documents "
                      f"{'to read' if dry_run else 'read'} for their lines only)")
        if totals["regions_set"]:
            _console().print(f"{totals['regions_set']} archived records moved to their issuer region in the reports "
                          "(written before the reports kept regions)")
        if missing:
            _console().print(f"[red]{len(missing)} archived records have no readable document: {missing[:10]}[/red]")
    if missing:
        raise typer.Exit(1)


def _post_step(target: Api, body: dict[str, Any], attempts: int = 30) -> dict[str, Any]:
    """One rebuild step; a report service restarting or a dependency down is waited for."""
    import httpx

    url = target.url("/api/v1/reports/rebuild")
    delay = 1.0
    for attempt in range(attempts):
        try:
            resp = httpx.post(url, json=body, headers=target.headers, timeout=300)
            if resp.status_code != 503:
                return checked(target, resp)
            reason = " ".join(resp.text.split())[:200]
            try:
                reason = resp.json().get("detail", reason)
            except (ValueError, AttributeError):
                pass
        except httpx.TransportError as exc:
            reason = unreachable(target, url, exc)
        if attempt + 1 < attempts:
            _console().print(f"[yellow]step not done ({reason}); again in {delay:.0f} s[/yellow]", highlight=False)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    _console().print(f"[red]the report service at {url} did not take the step; run the command again to "
                  "resume[/red]")
    raise typer.Exit(2)
