"""``fiscalflow console``: the report service's web console in a browser, logged in (docs/console.md)."""

from __future__ import annotations

import webbrowser
from urllib.parse import quote

import typer

from shared.cli.api_client import ReportUrl, Token, api


def console_url(url: str | None = None, token: str | None = None) -> str:
    """``<report API>/#token=<read token>``: the fragment never leaves the browser (the page moves
    it to sessionStorage and out of the address bar)."""
    target = api("report", url, token)
    bearer = target.headers["Authorization"].removeprefix("Bearer ")
    return f"{target.base}/#token={quote(bearer, safe='')}"


def register(app: typer.Typer) -> None:
    @app.command("console")
    def console(url: ReportUrl = None, token: Token = None,
                print_only: bool = typer.Option(False, "--print", help="Print the URL (it holds the token) "
                                                "instead of opening a browser.")) -> None:
        """Open the web console (pipeline, jobs, dead letters, reports, records) logged in with the
        read token; the admin token is typed in the console for a replay."""
        link = console_url(url, token)
        if print_only or not webbrowser.open(link):
            typer.echo(link)
