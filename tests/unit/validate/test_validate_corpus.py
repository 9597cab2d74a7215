"""A generated corpus with the generator's deliberate defects gets exactly the verdicts it expects."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from services.validate.cfdi import ValidationResult
from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI


def test_each_document_gets_the_expected_verdict_and_only_the_expected_rule(
        pki: DemoPKI, check: Callable[[bytes], ValidationResult]) -> None:
    generator = InvoiceGenerator(pki, seed=16, bad_fraction=0.5)
    seen: Counter[str] = Counter()
    for index in range(240):
        inv = generator.generate(index)
        if inv.expected_verdict == "rejected":
            continue  # a transport defect: the download stage refuses it, the XML itself is fine
        result = check(inv.xml)
        assert result.verdict.value == inv.expected_verdict, (index, inv.defect, result.rules)
        assert result.rule_ids == ([inv.expected_reason] if inv.expected_reason else []), (index, inv.defect)
        seen[inv.expected_reason or "VALID"] += 1
    assert set(seen) >= {"VALID", "XML_MALFORMED", "TOTAL_MISMATCH", "SELLO_INVALID"}, seen
