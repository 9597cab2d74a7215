"""Reading an archived document back (shared/cfdi/facts.py, what a report rebuild does for records
archived before the registry kept their facts) gives the very facts the validate stage sent on:
otherwise a rebuilt report would differ from the one the stream built."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from services.validate.cfdi import CfdiValidator
from services.validate.service import facts_of
from shared.cfdi.facts import UnreadableDocument, read_facts
from tooling.issuers.generator import InvoiceGenerator


def _same_as_validate(validator: CfdiValidator, xml: bytes) -> None:
    result = validator.validate(xml)
    assert result.is_valid, result.rules
    assert read_facts(xml) == facts_of(result).model_copy(update={"trust": ""})


@pytest.mark.parametrize("tipo", ["I", "E", "P"])
def test_generated_documents_read_back_to_the_validate_stages_facts(
        validator: CfdiValidator, generator: InvoiceGenerator, tipo: str) -> None:
    for index in range(8):  # several currencies and exchange rates per type
        _same_as_validate(validator, generator.generate(index, defect=None, tipo=tipo).xml)


def test_the_public_valid_samples_read_back_to_the_validate_stages_facts(
        sample_validator: CfdiValidator, shared_cfdi: Path) -> None:
    rows = list(csv.DictReader((shared_cfdi / "samples" / "MANIFEST.tsv").open(), delimiter="\t"))
    valid = [r["file"] for r in rows if r["expected_verdict"] == "valid"]
    assert valid
    for name in valid:
        xml = (shared_cfdi / "samples" / name).read_bytes()
        if sample_validator.validate(xml).is_valid:
            _same_as_validate(sample_validator, xml)


@pytest.mark.parametrize("xml", [b"", b"<x/>", b"not xml", b'<!DOCTYPE x [<!ENTITY e "e">]><x>&e;</x>',
                                 b'<cfdi:Comprobante xmlns:cfdi="http://www.sat.gob.mx/cfd/4" Total="1"/>'])
def test_what_is_not_an_archived_cfdi_is_refused_with_a_reason(xml: bytes) -> None:
    with pytest.raises(UnreadableDocument):
        read_facts(xml)
