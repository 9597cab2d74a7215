"""Security promises checked on the running services (the shared stack of tests/faults/world.py,
whose secrets are distinctive strings and whose API token comes from a ``_FILE``). What other tests
already prove is listed in docs/security.md, not repeated here."""

from __future__ import annotations

import ast
import inspect
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.exceptions
import botocore.session
import httpx
import pytest
from botocore.config import Config

import services.ingest.api as ingest_api
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
    # The ingest API's dependency compares with hmac.compare_digest ...
    tree = ast.parse(inspect.getsource(ingest_api.create_app))
    authorized = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "authorized")
    calls = {ast.unparse(n.func) for n in ast.walk(authorized) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls, calls
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


def test_wrong_or_missing_tokens_are_refused_and_the_file_token_works(world: World) -> None:
    url = f"{world.ingest}/api/v1/jobs"
    body = {"record_ids": [f"sec-{uuid.uuid4()}"]}
    token = SECRETS["api_token"]
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
    with httpx.Client(timeout=30) as http:
        for name, headers in refused.items():
            resp = http.post(url, json=body, headers=headers)
            assert resp.status_code in (401, 403), (name, resp.status_code, resp.text)
            assert resp.json().get("detail"), name
        non_ascii = http.post(url, json=body, headers={b"Authorization": "Bearer tok\u00e9n".encode()})
        assert non_ascii.status_code in (401, 403), non_ascii.text
        # The services were given the token only as FISCALFLOW_API_TOKEN_FILE (with a trailing newline).
        assert "FISCALFLOW_API_TOKEN" not in world.env and "FISCALFLOW_API_TOKEN_FILE" in world.env
        assert http.post(url, json=body, headers=world.auth).status_code == 202


def test_every_mutating_endpoint_refuses_without_a_token(world: World) -> None:
    mutating = 0
    with httpx.Client(timeout=30) as http:
        for base in (world.ingest, world.report):
            spec = http.get(f"{base}/openapi.json").json()
            for path, ops in spec["paths"].items():
                for method in ops:
                    if method.lower() in ("get", "head", "options"):
                        continue
                    mutating += 1
                    concrete = path.replace("{", "").replace("}", "")
                    resp = http.request(method.upper(), base + concrete, json={"record_ids": ["x"]})
                    assert resp.status_code in (401, 403), (base, method, path, resp.status_code)
            # Methods the document does not list are refused too (no hidden write path).
            for path in spec["paths"]:
                for method in ("PUT", "DELETE", "PATCH"):
                    if method.lower() not in spec["paths"][path]:
                        resp = http.request(method, base + path.replace("{", "").replace("}", ""))
                        assert resp.status_code in (401, 403, 404, 405), (base, method, path, resp.status_code)
    assert mutating >= 1


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
              "s3_secret_key": "sk-from-file", "api_token": "tok-from-file"}
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
