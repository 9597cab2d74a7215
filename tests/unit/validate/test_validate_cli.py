"""``fiscalflow validate``: JSON lines, exit codes, duplicates within a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from services.validate import cli
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI

REPO = Path(__file__).resolve().parents[3]


def _app() -> typer.Typer:
    app = typer.Typer()
    cli.register(app)

    @app.command("noop")  # a second command keeps typer in multi-command mode, as in `fiscalflow`
    def _noop() -> None: ...

    return app


def _lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_judges_files_and_directories(pki: DemoPKI, generator: InvoiceGenerator, tmp_path: Path) -> None:
    inv = [generator.generate(i, defect=None) for i in range(3)]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.xml").write_bytes(inv[0].xml)
    (tmp_path / "a" / "two.xml").write_bytes(inv[1].xml)
    (tmp_path / "a" / "broken.xml").write_bytes(inv[2].xml[:100])
    same_uuid = generator.seal_and_stamp(generator.build_tree(7), uuid=inv[0].uuid)
    (tmp_path / "z-dup.xml").write_bytes(same_uuid)
    result = CliRunner().invoke(_app(), ["validate", "--trust-ca", str(pki.ca_cert), "--stamp-certs",
                                         str(pki.stamp_certs_dir), str(tmp_path / "a"), str(tmp_path / "z-dup.xml")])
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    by_file = {Path(str(line["file"])).name: line for line in lines}
    assert [Path(str(line["file"])).name for line in lines] == ["broken.xml", "one.xml", "two.xml", "z-dup.xml"]
    assert by_file["one.xml"]["verdict"] == "valid" and by_file["one.xml"]["rules"] == []
    assert by_file["one.xml"]["uuid"] == inv[0].uuid
    assert by_file["broken.xml"]["verdict"] == "invalid"
    assert by_file["broken.xml"]["rules"] == ["XML_MALFORMED"]
    assert by_file["z-dup.xml"]["verdict"] == "duplicate"
    assert by_file["z-dup.xml"]["rules"] == ["DUPLICATE_UUID"]
    assert set(lines[0]) >= {"file", "verdict", "rules", "sat_codes", "uuid"}


def test_untrusted_without_the_ca(generator: InvoiceGenerator, tmp_path: Path) -> None:
    (tmp_path / "one.xml").write_bytes(generator.generate(0, defect=None).xml)
    result = CliRunner().invoke(_app(), ["validate", str(tmp_path)], env={"FISCALFLOW_TRUST_CA": ""})
    assert result.exit_code == 0
    assert _lines(result.stdout)[0]["rules"] == ["CERT_UNTRUSTED"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(_app(), ["validate", str(tmp_path / "missing.xml")]).exit_code == 2
    assert runner.invoke(_app(), ["validate", "--trust-ca", str(tmp_path / "no.zip"), str(tmp_path)]).exit_code == 2
    assert runner.invoke(_app(), ["validate"]).exit_code == 2


def test_fiscalflow_entry_point_with_env_defaults(pki: DemoPKI, generator: InvoiceGenerator, tmp_path: Path) -> None:
    (tmp_path / "one.xml").write_bytes(generator.generate(0, defect=None).xml)
    env = {**os.environ, "FISCALFLOW_TRUST_CA": f"{pki.ca_cert}:{pki.ca_cert}",  # ':'-separated sources
           "FISCALFLOW_STAMP_CERTS": str(pki.stamp_certs_dir)}
    proc = subprocess.run([sys.executable, "-m", "services.cli", "validate", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    line = _lines(proc.stdout)[0]
    assert line["verdict"] == "valid"
    assert line["trust"] == "custom"


def test_directories_are_listed_as_rglob_lists_them(tmp_path: Path) -> None:
    """The fast listing finds and orders exactly what ``sorted(rglob)`` + ``is_file`` + ``.xml`` did."""
    for name in ("a/1.xml", "a/2.XML", ".hidden/h.xml", ".x.xml", "sp ace/s.xml", "b/c/d.xml", "b/c/e.xMl",
                 "b/x.xml.bak", "b/.xml", "Z/z.xml", "a-b.xml", "a b.xml", "b/noext"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"<x/>")
    (tmp_path / "b" / "link.xml").symlink_to(tmp_path / "a" / "1.xml")  # a link to a file counts
    (tmp_path / "linked-dir").symlink_to(tmp_path / "a")  # a linked directory is not entered
    (tmp_path / "b" / "broken.xml").symlink_to(tmp_path / "nowhere.xml")
    os.mkfifo(tmp_path / "b" / "fifo.xml")
    for root in (tmp_path, tmp_path / "b"):
        expected = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
        assert cli._documents([root]) == expected
        assert len(expected) >= 3


def test_validate_imports_no_pipeline_client(pki: DemoPKI, generator: InvoiceGenerator, tmp_path: Path) -> None:
    """`fiscalflow validate` is an offline tool: its start-up loads no Kafka, HTTP, database or
    tracing client (each costs tenths of a second to import)."""
    (tmp_path / "one.xml").write_bytes(generator.generate(0, defect=None).xml)
    script = (
        "import json, sys, typer\n"
        "from services.validate import cli\n"
        "app = typer.Typer()\n"
        "cli.register(app)\n"
        "app.command('noop')(lambda: None)\n"
        f"app(['validate', '--trust-ca', {str(pki.ca_cert)!r}, {str(tmp_path)!r}], standalone_mode=False)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"verdict":"valid"' in proc.stdout
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert not loaded & {"confluent_kafka", "aiokafka", "faust", "fastapi", "starlette", "uvicorn", "httpx", "asyncpg",
                         "botocore", "aiobotocore", "opentelemetry", "chdb", "clickhouse_connect"}
