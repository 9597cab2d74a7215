"""Security promises checked on the running services (the shared stack of tests/faults/world.py,
whose secrets are distinctive strings and whose API and read tokens come from ``_FILE``s). What other
tests already prove is listed in docs/security.md, not repeated here."""

from __future__ import annotations

import ast
import inspect
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.exceptions
import botocore.session
import httpx
import pytest
from botocore.config import Config
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.ingest.api import IngestContext, create_app
from services.report.api import create_api
from services.report.consistency import Consistency
from services.report.console import Console
from shared import http_auth
from shared.settings import PROJECT_ROOT, Settings
from tests.faults.world import SECRETS, World
from tooling.stack.s3 import BROKER_BUCKET

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SOURCE_DIRS = ("services", "shared")


def _token_names(node: ast.AST) -> set[str]:
    """Names and attributes in an expression that look like a secret or a presented credential."""
    out = set()
    for n in ast.walk(node):
        name = n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else ""
        if any(w in name.lower() for w in ("token", "credentials", "secret", "password")):
            out.add(name)
    return out


def test_the_token_check_is_constant_time_by_inspection() -> None:
    # The one token check of both APIs compares each of the two tokens with hmac.compare_digest ...
    tree = ast.parse(inspect.getsource(http_auth.ApiAuth.access).strip())
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert calls.count("hmac.compare_digest") == 2, calls
    # ... and nowhere in the services or the shared code is a token or secret compared with == / !=.
    offenders = []
    for top in SOURCE_DIRS:
        for path in (PROJECT_ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                    sides = [node.left, *node.comparators]
                    # A comparison with a literal (None, "", a constant) leaks nothing of the secret.
                    if not any(isinstance(s, ast.Constant) for s in sides) and _token_names(node):
                        offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


def test_wrong_or_missing_tokens_are_refused_and_the_file_tokens_work(world: World) -> None:
    url = f"{world.ingest}/api/v1/jobs"
    body = {"record_ids": [f"sec-{uuid.uuid4()}"]}
    reads = [f"{world.ingest}/api/v1/jobs/{uuid.uuid4()}", f"{world.report}/api/v1/reports/summary"]
    with httpx.Client(timeout=30) as http:
        for token in (SECRETS["api_token"], SECRETS["read_token"]):
            refused: dict[str, dict[str, str]] = {
                "missing": {},
                "wrong": {"Authorization": "Bearer not-the-token"},
                "prefix of the token": {"Authorization": f"Bearer {token[:-1]}"},
                "token plus a character": {"Authorization": f"Bearer {token}x"},
                "other case": {"Authorization": f"Bearer {token.upper()}"},
                "empty bearer": {"Authorization": "Bearer"},
                "basic scheme": {"Authorization": f"Basic {token}"},
                "token as a header of its own": {"X-Api-Token": token},
            }
            for name, headers in refused.items():
                resp = http.post(url, json=body, headers=headers)
                assert resp.status_code == 401, (name, resp.status_code, resp.text)
                assert resp.json().get("detail") and resp.headers["www-authenticate"] == "Bearer", name
                for read in reads:
                    assert http.get(read, headers=headers).status_code == 401, (name, read)
        for read in reads:
            non_ascii = http.get(read, headers={b"Authorization": "Bearer tok\u00e9n".encode()})
            assert non_ascii.status_code == 401, non_ascii.text
        non_ascii = http.post(url, json=body, headers={b"Authorization": "Bearer tok\u00e9n".encode()})
        assert non_ascii.status_code == 401, non_ascii.text
        # The services were given the tokens only as FISCALFLOW_*_TOKEN_FILE (with a trailing newline).
        for name in ("FISCALFLOW_API_TOKEN", "FISCALFLOW_READ_TOKEN"):
            assert name not in world.env and f"{name}_FILE" in world.env, name
        job_id = world.submit(body)  # the admin token submits
        for base in (world.ingest, world.report):  # both tokens read
            for headers in (world.read_auth, world.auth):
                assert http.get(f"{base}/api/v1/jobs/{job_id}", headers=headers).status_code == 200, base
        # The read token does not write, and the refusal says which token to use.
        resp = http.post(url, json=body, headers=world.read_auth)
        assert resp.status_code == 403, resp.text
        assert resp.json() == {"error": "forbidden",
                               "detail": "the read token cannot submit jobs; use the admin token"}


def _concrete(path: str) -> str:
    """An OpenAPI path with its parameters filled in (a UUID: valid for every id of both APIs)."""
    for name in [p.split("}")[0] for p in path.split("{")[1:]]:
        path = path.replace(f"{{{name}}}", str(uuid.uuid4()))
    return path


def test_every_non_ops_route_of_both_openapi_documents_refuses_without_a_token(world: World) -> None:
    """Generated from the services' own OpenAPI documents, so a new route cannot escape: every
    operation declares the bearer scheme and answers neither without a token nor with a wrong one;
    every write is an admin operation (it documents a 403) that the read token cannot call, and the
    read token reaches every other.  The documents themselves, /docs and the ops port stay open."""
    reads = writes = 0
    with httpx.Client(timeout=60) as http:
        for base in (world.ingest, world.report):
            spec = http.get(f"{base}/openapi.json").json()  # no token: it describes, holds no data
            _assert_docs_are_self_contained(http, base)
            scheme = spec["components"]["securitySchemes"]["bearer"]
            assert (scheme["type"], scheme["scheme"]) == ("http", "bearer") and "/openapi.json" in scheme["description"]
            for path, ops in spec["paths"].items():
                for method, op in ops.items():
                    where = (base, method, path)
                    assert op.get("security") == [{"bearer": []}] and "401" in op["responses"], where
                    admin = "403" in op["responses"]
                    assert admin or method.lower() in ("get", "head", "options"), f"{where}: a write for readers"
                    url = base + _concrete(path)
                    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                        resp = http.request(method.upper(), url, json={"record_ids": ["x"]}, headers=headers)
                        assert resp.status_code == 401, (*where, resp.status_code, resp.text)
                        assert resp.json()["error"] == "unauthorized" and resp.json()["detail"], where
                        assert resp.headers["www-authenticate"] == "Bearer", where
                    resp = http.request(method.upper(), url, json={"record_ids": ["x"]}, headers=world.read_auth)
                    if admin:
                        writes += 1
                        assert resp.status_code == 403 and "use the admin token" in resp.json()["detail"], where
                    else:
                        reads += 1  # a 400 (a required parameter left out) or a 404 (an unknown id) is fine
                        assert resp.status_code not in (401, 403) and resp.status_code < 500, (*where, resp.text)
            # Methods the document does not list are refused too (no hidden write path).
            for path in spec["paths"]:
                for method in ("PUT", "DELETE", "PATCH"):
                    if method.lower() not in spec["paths"][path]:
                        resp = http.request(method, base + _concrete(path))
                        assert resp.status_code in (401, 403, 404, 405), (base, method, path, resp.status_code)
    assert reads >= 9 and writes >= 3, (reads, writes)  # both documents were read
    assert set(world.health().values()) == {200}  # the ops port needs no token


def test_job_views_never_show_a_callback_url_on_either_api(world: World) -> None:
    # A callback URL may carry the receiver's token.  (A host outside callback_allowed_hosts: if the
    # report service tries the callback, it is refused before anything is resolved.)
    job_id, secret = str(uuid.uuid4()), f"cbtok-{uuid.uuid4().hex}"
    url = f"https://hooks.example.invalid/fiscalflow?token={secret}"
    world.db("INSERT INTO jobs (job_id, callback_url) VALUES ($1, $2)", uuid.UUID(job_id), url)
    for base in (world.ingest, world.report):
        resp = httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=world.read_auth, timeout=30)
        assert resp.status_code == 200 and resp.json()["callback"] is True, (base, resp.text)
        assert secret not in resp.text and "hooks.example.invalid" not in resp.text, (base, resp.text)


def _require_read(route: APIRoute) -> bool:
    """Whether the route's dependencies (at any depth) include an ApiAuth.require_read."""
    todo = [route.dependant]
    while todo:
        dep = todo.pop()
        call: Any = dep.call
        if getattr(call, "__func__", None) is http_auth.ApiAuth.require_read:
            return True
        todo += dep.dependencies
    return False


def test_every_route_of_both_apps_asks_for_a_token_even_one_left_out_of_the_openapi() -> None:
    """The OpenAPI test above sees documented routes; this one the apps' every route, as built."""
    settings = Settings()
    auth = http_auth.ApiAuth(settings)
    ingest = create_app(IngestContext(settings, None, None, {}, None, lambda: ""))  # type: ignore[arg-type]
    report = create_api(None, auth)  # type: ignore[arg-type]
    Consistency(SimpleNamespace(pool=None), settings, "", None).install(report, auth)  # type: ignore[arg-type]
    Console(None, settings, "").install(report, auth)  # type: ignore[arg-type]
    apps: dict[str, FastAPI] = {"ingest": ingest, "report": report}
    for name, app in apps.items():
        routes = [r for r in app.routes if isinstance(r, APIRoute)]
        assert len(routes) >= 2, name
        assert [r.path for r in routes if not _require_read(r)] == [], name
        # Besides them, only the open documentation and the web console's static files (the page at
        # / and its scripts, styles and vendored chart library under /console): they hold no data,
        # the page sends the token on its API calls (services/report/console.py, docs/console.md).
        # No other plain Starlette route.
        others = {getattr(r, "path", repr(r)) for r in app.routes if not isinstance(r, APIRoute)}
        assert others <= {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/docs/assets",
                          "/", "/console"}, (name, others)


def _assert_docs_are_self_contained(http: httpx.Client, base: str) -> None:
    """/docs renders in an air-gapped cluster: every script, stylesheet and icon it loads is served
    by the service itself (no CDN), and /redoc leads there."""
    page = http.get(f"{base}/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    loaded = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', page.text)
    assert len(loaded) >= 3 and all(u.startswith("/docs/assets/") for u in loaded), loaded
    for url in loaded:
        asset = http.get(f"{base}{url}")
        assert asset.status_code == 200 and len(asset.content) > 500, url
    assert http.get(f"{base}/docs/assets/index.html").status_code == 404  # only what the page loads
    assert http.get(f"{base}/redoc").headers.get("location") == "/docs"


def test_request_size_caps(world: World) -> None:
    url = f"{world.ingest}/api/v1/jobs"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        yield b'{"record_ids": ["'
        for _ in range(11):
            yield b"x" * (1024 * 1024)
        yield b'"]}'

    with httpx.Client(timeout=60) as http:
        resp = http.post(url, content=chunks(), headers={**world.auth, "content-type": "application/json"})
        assert resp.status_code == 413 and "bytes" in resp.text, (resp.status_code, resp.text[:200])
        # An oversized body without a token is refused before it is read.
        resp = http.post(url, content=b"x" * (11 * 1024 * 1024), headers={"content-type": "application/json"})
        assert resp.status_code in (401, 413), resp.status_code
        for base in (world.ingest, world.report):
            resp = http.get(f"{base}/api/v1/jobs/{'a' * 60_000}")
            assert 400 <= resp.status_code < 500, (base, resp.status_code)
    world.assert_alive()


def test_the_services_s3_identity_cannot_create_buckets_or_touch_the_brokers(world: World) -> None:
    s = world.settings
    s3 = botocore.session.get_session().create_client(
        "s3", endpoint_url=s.s3_endpoint, region_name=s.s3_region,
        aws_access_key_id=SECRETS["s3_access_key"], aws_secret_access_key=SECRETS["s3_secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    attempts: dict[str, Callable[[], object]] = {
        "create a bucket": lambda: s3.create_bucket(Bucket=f"ff-sec-{uuid.uuid4().hex[:12]}"),
        "delete the archive bucket": lambda: s3.delete_bucket(Bucket=s.s3_bucket),
        "list the broker's bucket": lambda: s3.list_objects_v2(Bucket=BROKER_BUCKET),
        "read from the broker's bucket": lambda: s3.get_object(Bucket=BROKER_BUCKET, Key="anything"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(botocore.exceptions.ClientError) as exc:
            attempt()
        assert exc.value.response["Error"]["Code"] == "AccessDenied", (name, exc.value.response)
    assert s3.head_bucket(Bucket=s.s3_bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200  # still there


def test_secret_files_supply_every_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"pg_dsn": "postgresql://u:pw-from-file@db:5432/x", "s3_access_key": "ak-from-file",
              "s3_secret_key": "sk-from-file", "api_token": "tok-from-file", "read_token": "rtok-from-file",
              "callback_secret": "cb-from-file", "kafka_sasl_password": "kafka-pw-from-file",
              "kafka_ssl_key_password": "kafka-key-pw-from-file", "clickhouse_url": "http://u:pw@ch:8123/x"}
    for name, value in values.items():
        monkeypatch.delenv(f"FISCALFLOW_{name.upper()}", raising=False)
        (tmp_path / name).write_text(value + "\n")
        monkeypatch.setenv(f"FISCALFLOW_{name.upper()}_FILE", str(tmp_path / name))
    got = Settings()
    assert {n: getattr(got, n).get_secret_value() for n in values} == values


def test_secrets_never_reach_a_log_or_the_config_output(world: World) -> None:
    """Runs last in this module: by then the services went through the fault tests' outages (when
    the stack is shared), the bad input and the fuzzing, whose error paths are where secrets leak."""
    printed = world.cli("config").stdout + world.cli("config", "--markdown").stdout
    assert "(secret)" in printed or "***" in printed or "**********" in printed
    sources = {"fiscalflow config": printed}
    logs = world.service_logs()
    assert len(logs) == 5, logs
    for log in logs + sorted((world.settings.local_dir / "logs").glob("*.log")):
        sources[log.name] = log.read_text(errors="replace")
    assert sum(len(t) for t in sources.values()) > 1000  # the logs are not empty: there was something to leak
    leaks = [(where, name) for where, text in sources.items() for name, secret in SECRETS.items() if secret in text]
    assert not leaks, leaks
