"""Every public sample gets the verdict MANIFEST.tsv expects (SAT's test CA trusted)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from services.validate.cfdi import CfdiValidator
from services.validate.cfdi.transport import new_parser, parse

# Read at collection time (the parametrisation needs the rows); the fixture skips when absent.
MANIFEST = (Path(__file__).resolve().parents[3] / ".." / "shared" / "cfdi" / "samples" / "MANIFEST.tsv").resolve()
ROWS = list(csv.DictReader(MANIFEST.open(encoding="utf-8"), delimiter="\t")) if MANIFEST.is_file() else []
# cryptography refuses this certificate's non-DER subject; the reference validator's parser read it,
# so only its trust label differs (the verdict and rules are the same: XSD).
TRUST_UNREADABLE = {"real/pycfdi/Resources__pagos20__pago_complete.xml"}


def _rows(with_trust: bool = False) -> list[object]:
    out: list[object] = []
    for row in ROWS:
        marks = []
        if with_trust and row["file"] in TRUST_UNREADABLE:
            marks.append(pytest.mark.xfail(strict=True, reason="certificate not parseable by cryptography"))
        out.append(pytest.param(row, id=row["file"].rsplit("/", 1)[-1], marks=marks))
    return out or [pytest.param(None, marks=pytest.mark.skip(reason="shared samples absent"))]


@pytest.mark.parametrize("row", _rows())
def test_sample_gets_expected_verdict_and_rule(row: dict[str, str], sample_validator: CfdiValidator,
                                               shared_cfdi: Path) -> None:
    result = sample_validator.validate((shared_cfdi / "samples" / row["file"]).read_bytes())
    assert result.verdict.value == row["expected_verdict"]
    if row["expected_verdict"] == "valid":
        assert result.rules == []
        assert result.uuid == row["uuid"].upper()
    else:
        assert row["rule_id"] in result.rule_ids
        if row["sat_code"]:
            assert row["sat_code"] in result.sat_codes


@pytest.mark.parametrize("row", _rows())
def test_sample_reports_every_rule_the_reference_reported(row: dict[str, str], sample_validator: CfdiValidator,
                                                          shared_cfdi: Path) -> None:
    result = sample_validator.validate((shared_cfdi / "samples" / row["file"]).read_bytes())
    expected = set(row["observed_rules"].split(",")) - {"VALID"}
    assert set(result.rule_ids) == expected


@pytest.mark.parametrize("row", _rows(with_trust=True))
def test_sample_trust_level(row: dict[str, str], sample_validator: CfdiValidator, shared_cfdi: Path) -> None:
    result = sample_validator.validate((shared_cfdi / "samples" / row["file"]).read_bytes())
    expected = None if row["trust"] in ("", "n/a") else row["trust"]
    assert result.trust == expected


@pytest.mark.parametrize("row", _rows())
def test_sample_report_fields(row: dict[str, str], sample_validator: CfdiValidator, shared_cfdi: Path) -> None:
    result = sample_validator.validate((shared_cfdi / "samples" / row["file"]).read_bytes())
    if row["uuid"]:
        assert result.uuid == row["uuid"].upper()
    assert (result.emisor_rfc or "") == row["emisor_rfc"]
    assert (result.fecha or "") == row["fecha"]
    assert (result.tipo_de_comprobante or "") == row["tipo"]
    assert (result.moneda or "") == row["moneda"]
    assert (str(result.total) if result.total is not None else "") == row["total"]


def test_fast_schema_gives_the_stock_schema_verdicts(shared_cfdi: Path) -> None:
    """Replacing the big enumerations by Python sets changes the cost, not the verdicts."""
    from services.validate.cfdi.schema import SchemaValidator

    fast, stock = SchemaValidator(fast=True), SchemaValidator(fast=False)
    parser = new_parser()
    compared = 0
    for path in sorted((shared_cfdi / "samples").rglob("*.xml")):
        parsed = parse(path.read_bytes(), parser, 10 * 1024 * 1024)
        if parsed.failure is not None or parsed.root is None:
            continue
        root = parsed.root
        for addenda in root.findall("{http://www.sat.gob.mx/cfd/4}Addenda"):
            root.remove(addenda)
        assert bool(fast.violations(root)) == bool(stock.violations(root)), path.name
        assert fast.violations(root) == stock.violations(root), path.name
        compared += 1
    assert compared >= 30


# Recorded with the validator as it was before the start-up and per-document speed-ups of issue 16
# (Python cadena, coherence reading each attribute once, schema cache): verdict, rule ids and SAT
# codes in the order reported. A difference here is a change of output, not of speed.
RECORDED = json.loads((Path(__file__).with_name("sample_verdicts.json")).read_text(encoding="utf-8"))


@pytest.mark.parametrize("row", _rows())
def test_sample_output_is_the_recorded_one(row: dict[str, str], sample_validator: CfdiValidator,
                                           shared_cfdi: Path) -> None:
    if row["file"] not in RECORDED:
        pytest.skip("a sample added after the recording: add its output to sample_verdicts.json")
    result = sample_validator.validate((shared_cfdi / "samples" / row["file"]).read_bytes())
    assert {"verdict": result.verdict.value, "rules": result.rule_ids,
            "sat_codes": result.sat_codes} == RECORDED[row["file"]]
