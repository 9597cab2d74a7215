"""A job's validation_rules: lenient lets only the documented rules pass, as warnings; strict none."""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from services.validate.cfdi import ValidationResult
from services.validate.cfdi.rules import RuleId
from services.validate.profile import LENIENT_RULES, profile_of, waivable
from shared.domain.messages import RuleWarning, ValidationProfile
from tooling.issuers.generator import InvoiceGenerator

C = "{http://www.sat.gob.mx/cfd/4}"
Find = Callable[..., etree._Element]
Check = Callable[[bytes], ValidationResult]
LENIENT, STRICT = ValidationProfile.LENIENT, ValidationProfile.STRICT


def _ppd_paid_in_cash(find_tree: Find, generator: InvoiceGenerator, check: Check) -> ValidationResult:
    root = find_tree("I", lambda r: r.get("MetodoPago") == "PUE", key="pue")
    root.set("MetodoPago", "PPD")
    root.set("FormaPago", "03")  # a PPD invoice must say 99 (por definir): CFDI40105
    return check(generator.seal_and_stamp(root))


def test_a_lenient_job_archives_a_catalogue_slip_with_its_warning(find_tree: Find, generator: InvoiceGenerator,
                                                                   check: Check) -> None:
    result = _ppd_paid_in_cash(find_tree, generator, check)
    assert not result.is_valid and result.rule_ids == ["FORMAPAGO_PPD_NOT_99"]
    assert waivable(result, LENIENT) == (RuleWarning(rule="FORMAPAGO_PPD_NOT_99", sat_code="CFDI40105"),)
    assert waivable(result, STRICT) is None


def test_amounts_and_seals_are_never_waived(find_tree: Find, generator: InvoiceGenerator, check: Check) -> None:
    root = find_tree("I", lambda r: r.get("MetodoPago") == "PUE", key="pue")
    root.set("MetodoPago", "PPD")
    root.set("FormaPago", "03")
    root.set("Total", str(float(root.get("Total", "0")) + 1))  # and the total no longer adds up
    result = check(generator.seal_and_stamp(root))
    assert {"FORMAPAGO_PPD_NOT_99", "TOTAL_MISMATCH"} <= set(result.rule_ids)
    assert waivable(result, LENIENT) is None  # one rule outside the set: rejected as under strict

    valid = check(generator.seal_and_stamp(find_tree("I", key="any")))
    assert valid.is_valid and waivable(valid, LENIENT) is None  # nothing to waive

    tampered = check(generator.generate(7, defect=None).xml.replace(b'Total="', b'Total="1', 1))
    assert not tampered.is_valid and waivable(tampered, LENIENT) is None


def test_the_lenient_set_leaves_out_every_layer_that_makes_a_document_or_its_sums_untrustworthy() -> None:
    never = {RuleId.XML_MALFORMED, RuleId.XSD, RuleId.SELLO_INVALID, RuleId.CERT_INVALID, RuleId.CERT_UNTRUSTED,
             RuleId.CERT_NOT_VALID_AT_FECHA, RuleId.TFD_MISSING, RuleId.TFD_SELLOSAT_INVALID,
             RuleId.TFD_SELLOCFD_MISMATCH, RuleId.SUBTOTAL_NE_SUM, RuleId.TOTAL_MISMATCH,
             RuleId.TOTAL_TRASLADADOS_NE_SUM, RuleId.DESCUENTO_NE_SUM, RuleId.DUPLICATE_UUID,
             RuleId.VALIDATOR_ERROR}
    assert not never & LENIENT_RULES
    assert LENIENT_RULES <= {r.value for r in RuleId}


def test_an_unreadable_profile_header_is_strict() -> None:
    assert profile_of("lenient") is LENIENT
    for header in (None, "", "LENIENT", "lenient ", "anything"):
        assert profile_of(header) is STRICT
