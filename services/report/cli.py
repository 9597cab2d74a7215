"""``fiscalflow report summary|daily|issuers|trend``: the report API as rich tables (or ``--json``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.table import Table

from shared.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Reports from the report service's API.")
console = Console()

JsonOpt = typer.Option(False, "--json", help="Print the API's JSON instead of tables.")


def _get(path: str, **params: Any) -> dict[str, Any]:
    settings = Settings()
    url = f"http://127.0.0.1:{settings.report_port}{path}"
    try:
        resp = httpx.get(url, params={k: v for k, v in params.items() if v is not None}, timeout=30)
    except httpx.HTTPError as exc:
        console.print(f"[red]report API at {url} unreachable: {exc}[/red] (is `fiscalflow service run report` up?)")
        raise typer.Exit(2) from None
    body: dict[str, Any] = resp.json()
    if resp.status_code >= 400:
        console.print(f"[red]{resp.status_code}: {body.get('detail', body)}[/red]")
        raise typer.Exit(1)
    return body


def _print_json(body: dict[str, Any]) -> None:
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


def _groups_table(title: str, groups: list[dict[str, Any]]) -> Table:
    t = Table(title=title)
    for col in ("tipo", "moneda", "count", "total", "total_mxn"):
        t.add_column(col, justify="right" if col in ("count", "total", "total_mxn") else "left")
    for g in groups:
        t.add_row(g["tipo"], g["moneda"], str(g["count"]), g["total"], g["total_mxn"])
    return t


@app.command()
def summary(job_id: str | None = typer.Option(None, "--job-id", help="Only this job's records."),
            as_json: bool = JsonOpt) -> None:
    """Records by status and rejections by reason code."""
    body = _get("/api/v1/reports/summary", job_id=job_id)
    if as_json:
        return _print_json(body)
    for title, data in (("by status", body["by_status"]), ("by reason", body["by_reason"])):
        t = Table(title=title)
        t.add_column("")
        t.add_column("records", justify="right")
        for k, n in data.items():
            t.add_row(k, str(n))
        console.print(t)
    return None


@app.command()
def daily(date: str = typer.Argument(..., help="YYYY-MM-DD (date part of Fecha as written)."),
          as_json: bool = JsonOpt) -> None:
    """One day's archived documents per TipoDeComprobante and Moneda, and per issuer."""
    body = _get("/api/v1/reports/daily", date=date)
    if as_json:
        return _print_json(body)
    console.print(_groups_table(f"{body['date']}", body["groups"]))
    t = Table(title="issuers")
    for col in ("rfc", "count", "total_mxn"):
        t.add_column(col, justify="left" if col == "rfc" else "right")
    for i in body["issuers"]:
        t.add_row(i["rfc"], str(i["count"]), i["total_mxn"])
    console.print(t)
    return None


@app.command()
def issuers(start: str = typer.Option(..., "--from", help="First day, YYYY-MM-DD."),
            end: str = typer.Option(dt.date.today().isoformat(), "--to", help="Last day, YYYY-MM-DD."),
            as_json: bool = JsonOpt) -> None:
    """Per issuer, per TipoDeComprobante and Moneda, over a range of days."""
    body = _get("/api/v1/reports/issuers", **{"from": start, "to": end})
    if as_json:
        return _print_json(body)
    for i in body["issuers"]:
        console.print(_groups_table(i["rfc"], i["groups"]))
    return None


@app.command()
def trend(hours: int = typer.Option(24, help="Hours back from now."), as_json: bool = JsonOpt) -> None:
    """Archived count and MXN total per hour of processing time."""
    body = _get("/api/v1/reports/trend", hours=hours)
    if as_json:
        return _print_json(body)
    t = Table(title=f"last {hours} h")
    for col in ("hour", "count", "total_mxn"):
        t.add_column(col, justify="left" if col == "hour" else "right")
    for p in body["points"]:
        t.add_row(p["hour"], str(p["count"]), p["total_mxn"])
    console.print(t)
    return None
