"""The commands against an API elsewhere (--url, --token and their variables), and every failure of
the way there said in one line, exit 1, no traceback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from services.cli import app
from shared.cli.api_client import Api, api, refusal
from shared.cli.api_client import bearer as settings_bearer
from shared.settings import Settings


@dataclass
class FakeApi:
    """Answers ``routes[path]`` = (status, content type, body) and records each request."""

    url: str
    routes: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, path: str, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.routes[path] = (status, content_type, raw)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi("")

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            api.seen.append({"method": self.command, "path": split.path, "query": split.query,
                             "authorization": self.headers.get("Authorization"),
                             "body": self.rfile.read(length) if length else b""})
            status, content_type, raw = api.routes.get(split.path, (404, "application/json", b'{"detail": "no"}'))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _serve

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): a connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


runner = CliRunner()
JOB = "0b6f3f5e-8f0c-4a8e-9d8e-2f1f2b8d8c11"
STATUS = {"job_id": JOB, "status": "completed", "priority": "normal", "finished": 2, "record_count": 2,
          "progress": 1.0, "counts": {"archived": 2}}


def _one_line_failure(result: object) -> str:
    """The failure's output, checked to be one line, exit 1, no traceback."""
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, out  # type: ignore[attr-defined]
    assert isinstance(result.exception, SystemExit), result.exception  # type: ignore[attr-defined]
    assert "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out
    return str(out)


def test_by_default_the_local_port_and_the_settings_tokens() -> None:
    s = Settings()
    assert api("report") == Api("report", f"http://127.0.0.1:{s.report_port}", settings_bearer(s))
    assert api("ingest", admin=True) == Api("ingest", f"http://127.0.0.1:{s.ingest_port}",
                                            settings_bearer(s, admin=True), admin=True)


def test_url_and_token_options_reach_a_remote_api(fake_api: FakeApi) -> None:
    fake_api.answer(f"/base/api/v1/jobs/{JOB}", 200, STATUS)
    result = runner.invoke(app, ["job", "show", JOB, "--url", f"{fake_api.url}/base/", "--token", "t0k"])
    assert result.exit_code == 0, result.output
    assert f"job {JOB}  completed" in result.output
    assert fake_api.seen[-1]["authorization"] == "Bearer t0k"


def test_url_and_token_from_the_environment(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/summary", 200, {"by_status": {"archived": 3}, "by_reason": {}})
    fake_api.answer("/api/v1/jobs", 202, {"job_id": JOB, "record_count": 2})
    env = {"FISCALFLOW_REPORT_URL": fake_api.url, "FISCALFLOW_INGEST_URL": fake_api.url,
           "FISCALFLOW_CLI_TOKEN": "from-env"}
    result = runner.invoke(app, ["report", "summary"], env=env)
    assert result.exit_code == 0, result.output
    assert "archived" in result.output
    result = runner.invoke(app, ["job", "submit", "--region", "norte", "--pattern", "*.xml"], env=env)
    assert result.exit_code == 0, result.output
    assert f"job {JOB}: 2 record(s)" in result.output
    assert [s["authorization"] for s in fake_api.seen] == ["Bearer from-env"] * 2
    assert fake_api.seen[-1]["method"] == "POST"
    assert json.loads(fake_api.seen[-1]["body"])["source"] == {"region": "norte", "pattern": "*.xml"}


@pytest.mark.parametrize("name", ["missing.txt", "a-directory"])
def test_job_submit_ids_file_that_cannot_be_read(tmp_path: Path, name: str, closed_port: int) -> None:
    (tmp_path / "a-directory").mkdir()
    path = tmp_path / name
    result = runner.invoke(app, ["job", "submit", "--ids", str(path), "--url", f"http://127.0.0.1:{closed_port}"])
    out = _one_line_failure(result)
    assert f"--ids {path}: cannot read it (" in out and "nothing submitted" in out
    assert ("No such file or directory" if name == "missing.txt" else "Is a directory") in out


def test_job_submit_ids_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"\xff\xfe\x00r1\n")
    out = _one_line_failure(runner.invoke(app, ["job", "submit", "--ids", str(path)]))
    assert "not UTF-8 text" in out


@pytest.mark.parametrize("args", [["report", "summary"], ["report", "trend", "--json"], ["job", "show", JOB],
                                  ["report", "rebuild"]])
def test_an_unreachable_api_is_named(closed_port: int, args: list[str]) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    out = _one_line_failure(runner.invoke(app, [*args, "--url", base]))
    service = args[0].replace("job", "ingest")
    assert f"{service} API at {base}/api/v1/" in out and "unreachable (ConnectError" in out
    assert "--url (FISCALFLOW_" in out


def test_job_submit_to_an_unreachable_api(tmp_path: Path, closed_port: int) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("r1\nr2\n")
    base = f"http://127.0.0.1:{closed_port}"
    out = _one_line_failure(runner.invoke(app, ["job", "submit", "--ids", str(ids), "--url", base]))
    assert f"ingest API at {base}/api/v1/jobs unreachable" in out


@pytest.mark.parametrize("args", [["report", "daily", "2025-03-01"], ["job", "show", JOB]])
def test_a_body_that_is_not_json_shows_status_and_its_start(fake_api: FakeApi, args: list[str]) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head>\n<body>" + "x" * 300 + "END</body></html>"
    for path in ("/api/v1/reports/daily", f"/api/v1/jobs/{JOB}"):
        fake_api.answer(path, 502, page, "text/html")
    out = _one_line_failure(runner.invoke(app, [*args, "--url", fake_api.url]))
    assert out.startswith(f"HTTP 502 from {fake_api.url}/api/v1/") and "not JSON (text/html)" in out
    shown = " ".join(page.split())[:200]
    assert shown + "…" in out and "END" not in out


def test_a_200_that_is_not_json_is_a_failure_too(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/summary", 200, "", "text/plain")
    out = _one_line_failure(runner.invoke(app, ["report", "summary", "--url", fake_api.url]))
    assert "HTTP 200 from" in out and "(empty body)" in out


def test_a_refused_token_names_where_it_came_from(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/summary", 401, {"detail": "bad token"})
    out = _one_line_failure(runner.invoke(app, ["report", "summary", "--url", fake_api.url, "--token", "nope"]))
    assert "refused the token given by --token (FISCALFLOW_CLI_TOKEN)" in out and "nope" not in out
    out = _one_line_failure(runner.invoke(app, ["report", "summary", "--url", fake_api.url]))
    assert "FISCALFLOW_READ_TOKEN" in out
    fake_api.answer("/api/v1/jobs", 403, "<html>Forbidden</html>", "text/html")
    out = _one_line_failure(runner.invoke(app, ["job", "submit", "--region", "r", "--pattern", "*",
                                                "--url", fake_api.url]))
    assert out.startswith("HTTP 403:") and "FISCALFLOW_API_TOKEN" in out


def test_refusal_is_one_line() -> None:
    assert refusal(500, {"detail": "a\nb   c"}) == "HTTP 500: a b c"
    assert refusal(409, {"detail": {"x": 1}}) == 'HTTP 409: {"x": 1}'


def test_shell_completion_is_offered() -> None:
    out = runner.invoke(app, ["--help"]).output
    assert "--install-completion" in out and "--show-completion" in out


# ---------------------------------------------------------------- the tables: amounts to the currency's decimals

DAILY = {"date": "2025-03-01", "record_count": 3, "total_amount": "19553940.07520313",
         "groups": [{"tipo": "I", "moneda": "MXN", "count": 2, "total": "19553930.07320313",
                     "total_mxn": "19553930.07320313"},
                    {"tipo": "T", "moneda": "XXX", "count": 1, "total": "10.5", "total_mxn": "0"},
                    {"tipo": "I", "moneda": "USD", "count": 1, "total": "0.125", "total_mxn": "2.005"}],
         "issuers": [{"rfc": "AAA010101AAA", "count": 3, "total_mxn": "19553940.07520313"}]}


def test_daily_tables_round_to_the_currency(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/daily", 200, DAILY)
    result = runner.invoke(app, ["report", "daily", "2025-03-01", "--url", fake_api.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "19553940.08 MXN" in out  # the title's total
    assert out.count("19553930.07 ") == 2 and "0732" not in out and "0752" not in out
    assert " 11 " in out and "10.5" not in out  # XXX: no decimals
    assert " 0.13 " in out and " 2.01 " in out  # USD and MXN: 2, half up
    assert " 19553940.08 " in out  # the issuer's row


def test_json_keeps_the_amounts_exact(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/daily", 200, DAILY)
    result = runner.invoke(app, ["report", "daily", "2025-03-01", "--json", "--url", fake_api.url])
    assert result.exit_code == 0 and json.loads(result.output) == DAILY


def test_issuers_and_verify_tables_round(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/issuers", 200, {"issuers": [{"rfc": "AAA010101AAA", "groups": DAILY["groups"]}]})
    fake_api.answer("/api/v1/reports/verify", 200, {
        "consistent": False, "records_off": 1, "days": 1, "complete": True, "from": None, "to": None, "seconds": 0.1,
        "cells": [{"day": "2025-03-01", "status": "archived", "reason": "", "postgres": 2, "clickhouse": 1,
                   "postgres_mxn": "100.4449", "clickhouse_mxn": "50.005", "differs": True}]})
    out = runner.invoke(app, ["report", "issuers", "--from", "2025-03-01", "--url", fake_api.url],
                        terminal_width=200).output
    assert "19553930.07 " in out and "0732" not in out
    result = runner.invoke(app, ["report", "verify", "--url", fake_api.url], terminal_width=200)
    assert result.exit_code == 1 and " 100.44 " in result.output and " 50.01 " in result.output


def test_regions_is_a_row_per_region_and_the_total_and_region_narrows_the_others(fake_api: FakeApi) -> None:
    every = {"from": None, "to": None, "record_count": 3, "total_mxn": "300.005",
             "regions": [{"region": "", "record_count": 1, "total_mxn": "100.0049", "rejected": 0, "duplicate": 0},
                         {"region": "north", "record_count": 2, "total_mxn": "200.0001", "rejected": 4,
                          "duplicate": 1}]}
    fake_api.answer("/api/v1/reports/regions", 200, every)
    result = runner.invoke(app, ["report", "regions", "--url", fake_api.url], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells[1:] for line in result.output.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 5}
    assert rows == {"(not known)": ["1", "100.00", "0", "0"], "north": ["2", "200.00", "4", "1"],
                    "all regions": ["3", "300.01", "4", "1"]}, result.output  # rounded once, not per region
    # Over a range of days: no rejections (they have no day), so no such columns.
    fake_api.answer("/api/v1/reports/regions", 200, {**every, "from": "2025-03-01", "to": "2025-03-31", "regions": [
        {**r, "rejected": None, "duplicate": None} for r in every["regions"]]})
    result = runner.invoke(app, ["report", "regions", "--from", "2025-03-01", "--to", "2025-03-31", "--url",
                                 fake_api.url], terminal_width=200)
    assert result.exit_code == 0 and "2025-03-01..2025-03-31" in result.output and "rejected" not in result.output
    assert fake_api.seen[-1]["query"] == "from=2025-03-01&to=2025-03-31"
    # --region goes to the API as ?region=
    fake_api.answer("/api/v1/reports/trend", 200, {"hours": 1, "region": "south", "points": []})
    result = runner.invoke(app, ["report", "trend", "--hours", "1", "--region", "south", "--json", "--url",
                                 fake_api.url])
    assert result.exit_code == 0 and fake_api.seen[-1]["query"] == "hours=1&region=south", result.output


# ---------------------------------------------------------------- trend: a bar per hour

TREND = {"hours": 3, "points": [{"hour": "2025-03-01T10:00:00Z", "count": 10, "total_mxn": "1000.005"},
                                {"hour": "2025-03-01T11:00:00Z", "count": 5, "total_mxn": "500.4"},
                                {"hour": "2025-03-01T12:00:00Z", "count": 0, "total_mxn": "0"}]}


def test_trend_is_a_bar_chart(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/trend", 200, TREND)
    result = runner.invoke(app, ["report", "trend", "--hours", "3", "--url", fake_api.url], terminal_width=100)
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "2025-03-01 1" in line}
    assert set(rows) == {"2025-03-01 10:00", "2025-03-01 11:00", "2025-03-01 12:00"}
    width = rows["2025-03-01 10:00"].count("█")  # the busiest hour fills the bar: the terminal's width less 50
    assert 10 <= width <= 50 and "█" * width in rows["2025-03-01 10:00"] and "1000.01" in rows["2025-03-01 10:00"]
    assert rows["2025-03-01 11:00"].count("█") == width // 2 and "500.40" in rows["2025-03-01 11:00"]
    assert "█" not in rows["2025-03-01 12:00"]


def test_trend_json_is_the_apis(fake_api: FakeApi) -> None:
    fake_api.answer("/api/v1/reports/trend", 200, TREND)
    result = runner.invoke(app, ["report", "trend", "--json", "--url", fake_api.url])
    assert result.exit_code == 0 and json.loads(result.output) == TREND
