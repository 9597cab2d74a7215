"""The ingest commands end to end: ``fiscalflow job submit --wait``, ``job show``, ``register``, ``publish``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shared.db.migrate import connect_pool
from shared.db.records import lookup
from shared.settings import Settings
from shared.topics import Stage
from tests.support.pipeline import Pipeline, write_batch

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "services.cli"]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, input=stdin, timeout=120, env=os.environ)


def test_job_submit_wait_takes_every_generated_invoice_through_download(stack_settings: Settings) -> None:
    batch, rows = write_batch(stack_settings, "south", 150)
    ids = {r.record_id for r in rows}

    async def scenario() -> None:
        async with Pipeline(stack_settings, (Stage.INGEST, Stage.DOWNLOAD)) as pipe:
            # --wait follows the job until it completes; without the validate and store stages it stays
            # running, so the test reads the validate topic, checks `job show`, then stops the command.
            proc = await asyncio.create_subprocess_exec(
                *CLI, "job", "submit", "--region", "south", "--pattern", f"{batch}/*.xml", "--wait",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"})
            try:
                assert proc.stdout is not None
                first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                if not first:
                    assert proc.stderr is not None
                    pytest.fail((await proc.stderr.read()).decode()[-2000:])
                assert first.startswith("job ") and f"{len(rows)} record(s)" in first, first
                job_id = first.split()[1].rstrip(":")
                out = await pipe.read(Stage.VALIDATE, ids, within_s=90)
                assert set(out) == ids
                deadline = time.monotonic() + 20
                while True:
                    shown = await asyncio.to_thread(_run, "job", "show", job_id, "--json")
                    assert shown.returncode == 0, shown.stderr
                    st = json.loads(shown.stdout)
                    if st["counts"] == {"downloaded": len(rows)} or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                assert st["record_count"] == len(rows) and st["counts"] == {"downloaded": len(rows)}
                assert proc.returncode is None  # still following a running job
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                await proc.wait()

    asyncio.run(scenario())


def test_register_refuses_a_manifest_with_bad_rows_and_registers_a_good_one(
        stack_settings: Settings, tmp_path: Path) -> None:
    rid = f"reg-{uuid.uuid4().hex}"
    sha = "ab" * 32
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,region,path,sha256,size\n"
                   f"{rid},north,b/{rid}.xml,{sha},10\n"
                   f"{rid}-2,mars,b/x.xml,{sha},\n"
                   f"{rid}-3,north,../x.xml,{sha},\n"
                   f"{rid}-4,north,b/y.xml,nothex,-1\n")
    res = _run("register", str(bad))
    assert res.returncode == 1
    for expected in ("line 3: unknown region 'mars'", "line 4:", "line 5: sha256 is not 64 hex digits",
                     "nothing registered"):
        assert expected in res.stderr, res.stderr
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"record_id": rid, "region": "north", "path": f"b/{rid}.xml", "sha256": sha,
                                "size": 10}) + "\n")

    async def registered(ids: list[str]) -> set[str]:
        pool = await connect_pool(stack_settings.pg_dsn.get_secret_value())
        found = set(await lookup(pool, ids))
        await pool.close()
        return found

    assert asyncio.run(registered([rid, f"{rid}-2"])) == set()  # nothing half-registered
    res = _run("register", str(good))
    assert res.returncode == 0, res.stderr
    assert asyncio.run(registered([rid])) == {rid}
    res = _run("publish", "--job", "not-a-uuid", rid)
    assert res.returncode != 0 and "UUID" in res.stderr


def test_job_commands_say_in_one_line_what_they_could_not_reach_or_read(tmp_path: Path) -> None:
    """The real entry point: a missing --ids file and an ingest API nobody listens on (--url, or
    FISCALFLOW_INGEST_URL) are one line on stderr, exit 1, no traceback."""
    import socket

    with socket.socket() as s:  # a loopback port that refuses connections
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    missing = tmp_path / "missing.txt"
    res = _run("job", "submit", "--ids", str(missing))
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert f"--ids {missing}: cannot read it (No such file or directory)" in res.stderr
    for res in (_run("job", "show", str(uuid.uuid4()), "--url", closed),
                subprocess.run([*CLI, "job", "submit", "--region", "south", "--pattern", "*.xml"], capture_output=True,
                               text=True, timeout=120, env={**os.environ, "FISCALFLOW_INGEST_URL": closed})):
        assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
        assert f"ingest API at {closed}/api/v1/jobs" in res.stderr and "unreachable" in res.stderr, res.stderr
        assert "Traceback" not in res.stdout + res.stderr
