"""``fiscalflow issuer`` writes files and manifests inside the region roots, and nowhere else."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tooling.issuers.cli import app
from tooling.issuers.output import MANIFEST_HEADER


@pytest.fixture()
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FISCALFLOW_LOCAL_DIR", str(tmp_path))
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == MANIFEST_HEADER
        return list(reader)


def test_generate_writes_files_and_manifests(local_dir: Path) -> None:
    result = CliRunner().invoke(app, ["generate", "--count", "90", "--seed", "1", "--batch", "b1",
                                      "--bad-fraction", "0.4", "--start", "2025-03-03"])
    assert result.exit_code == 0, result.output
    regions = local_dir / "sftp" / "regions"
    rows = [row for region in ("north", "central", "south") for row in _rows(regions / region / "b1" / "MANIFEST.csv")]
    assert len(rows) == 90
    reasons = {row["expected_reason"] for row in rows}
    assert {"CHECKSUM_MISMATCH", "FILE_NOT_FOUND", "", "TOTAL_MISMATCH"} <= reasons
    for row in rows:
        file = regions / row["region"] / row["path"]
        assert row["path"] == f"b1/{row['record_id']}.xml"
        if row["expected_reason"] == "FILE_NOT_FOUND":
            assert not file.exists()
            continue
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        assert int(row["size"]) == file.stat().st_size
        assert (digest == row["sha256"]) is (row["expected_reason"] != "CHECKSUM_MISMATCH")
    assert (local_dir / "pki" / "pki.json").is_file()


@pytest.mark.parametrize("batch", ["../escape", "/abs", "a/../../b", "."])
def test_batch_names_cannot_leave_the_region_root(local_dir: Path, batch: str) -> None:
    result = CliRunner().invoke(app, ["generate", "--count", "1", "--region", "north", "--batch", batch])
    assert result.exit_code != 0
    assert not (local_dir / "sftp" / "escape").exists() and not Path("/abs").exists()


def test_load_copies_and_merges(local_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in" / "nested"
    source.mkdir(parents=True)
    (source / "a.xml").write_bytes(b"<a/>")
    (source.parent / "b.xml").write_bytes(b"<b/>")
    runner = CliRunner()
    assert runner.invoke(app, ["load", "--region", "central", "--batch", "imp", str(source.parent)]).exit_code == 0
    assert runner.invoke(app, ["load", "--region", "central", "--batch", "imp", str(source / "a.xml")]).exit_code == 0
    rows = _rows(local_dir / "sftp" / "regions" / "central" / "imp" / "MANIFEST.csv")
    assert len(rows) == 3  # the second load of a.xml got its own record id, merged beside the first two
    for row in rows:
        data = (local_dir / "sftp" / "regions" / "central" / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]


def test_pki_json_names_the_validator_inputs(local_dir: Path) -> None:
    result = CliRunner().invoke(app, ["pki", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert Path(info["trust_ca"]).is_file()
    assert any(p.suffix == ".cer" for p in Path(info["stamp_certs"]).iterdir())
