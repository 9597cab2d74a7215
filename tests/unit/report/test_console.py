"""The web console's static side and its command, without servers: the page and its assets are open
and served with a strict CSP, hold no inline script, the vendored chart library is the one the
vendor README names, the API routes still need the token, ``fiscalflow console --print``."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import unquote

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.cli import app as cli_app
from services.report.api import create_api
from services.report.console import CONSOLE_DIR, Console, _rules
from shared.http_auth import ApiAuth
from shared.settings import Settings


def _client() -> TestClient:
    settings = Settings()
    auth = ApiAuth(settings)
    api = create_api(None, auth)  # type: ignore[arg-type]
    Console(None, settings, "").install(api, auth)  # type: ignore[arg-type]
    return TestClient(api)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if any(name.startswith("on") or name == "style" for name, _ in attrs):
            self.inline.append(f"<{tag} {attrs}>")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


def test_the_page_and_its_assets_are_open_with_a_strict_csp_and_no_inline_script() -> None:
    http = _client()
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    tags = _Tags()
    tags.feed(page.text)
    assert tags.inline == []  # the CSP would block them
    assets = [a.get("src") or a.get("href") for t, a in tags.tags if t in ("script", "link") and a.get("rel") != "icon"]
    assert set(assets) == {"/console/app.css", "/console/vendor/chart.umd.min.js", "/console/app.js"}
    for path in assets:
        assert path is not None
        resp = http.get(path)  # no token: they hold no data
        assert resp.status_code == 200 and resp.content, path
        assert resp.headers["content-security-policy"] == csp and resp.headers["x-content-type-options"] == "nosniff"
    assert http.get("/console/nothing.js").status_code == 404
    # The data still needs the token.
    for path in ("/api/v1/pipeline", "/api/v1/jobs", "/api/v1/dead-letters", "/api/v1/search?q=x",
                 "/api/v1/reports/days"):
        assert http.get(path).status_code == 401, path
    assert http.post("/api/v1/dead-letters/replay", json={"all": True}).status_code == 401


def test_the_vendored_chart_library_is_the_one_its_readme_names() -> None:
    readme = (CONSOLE_DIR / "vendor" / "README.md").read_text()
    digest = re.search(r"sha256 `([0-9a-f]{64})`", readme)
    assert digest is not None
    data = (CONSOLE_DIR / "vendor" / "chart.umd.min.js").read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest.group(1)
    assert b"Chart.js v4.6.1" in data[:200] and "4.6.1" in readme
    assert (CONSOLE_DIR / "vendor" / "chart.js-LICENSE.md").read_text().startswith("The MIT License")


def test_a_replay_must_choose_its_dead_letters_and_needs_the_admin_token() -> None:
    settings = Settings()
    http = _client()
    read = {"Authorization": f"Bearer {settings.read_token.get_secret_value()}"}
    admin = {"Authorization": f"Bearer {settings.api_token.get_secret_value()}"}
    url = "/api/v1/dead-letters/replay"
    resp = http.post(url, json={"all": True}, headers=read)
    assert resp.status_code == 403 and "use the admin token" in resp.json()["detail"]
    resp = http.post(url, json={"dry_run": True}, headers=admin)
    assert resp.status_code == 400 and "no dead letters chosen" in resp.json()["detail"]
    for bad in ({"stage": "nowhere"}, {"letter_ids": [""]}, {"all": True, "extra": 1},
                {"all": True, "max_replays": -1}):
        resp = http.post(url, json=bad, headers=admin)
        assert resp.status_code == 400 and resp.json()["error"] == "bad_request", bad
    assert http.get("/api/v1/search", headers=read).status_code == 400  # q is required
    assert http.get("/api/v1/jobs?limit=0", headers=read).status_code == 400


def test_the_failed_rules_of_a_validate_dead_letter() -> None:
    assert _rules({"rules": ["CFDI40101", "SELLO"], "sat_codes": ["CFDI40101", None]}) == ["CFDI40101 (CFDI40101)",
                                                                                           "SELLO"]
    assert _rules({"size": 1}) == [] and _rules(None) == [] and _rules("text") == []


def test_console_print_gives_the_url_with_the_token_in_the_fragment() -> None:
    runner = CliRunner()
    out = runner.invoke(cli_app, ["console", "--print", "--url", "https://reports.example/", "--token", "t/k n"])
    assert out.exit_code == 0, out.output
    link = out.output.strip()
    assert link == "https://reports.example/#token=t%2Fk%20n" and unquote(link.split("#token=")[1]) == "t/k n"
    out = runner.invoke(cli_app, ["console", "--print"], env={"FISCALFLOW_READ_TOKEN": "the-read-token",
                                                              "FISCALFLOW_REPORT_PORT": "18999"})
    assert out.exit_code == 0 and out.output.strip() == "http://127.0.0.1:18999/#token=the-read-token", out.output
