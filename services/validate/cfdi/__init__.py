"""CFDI 4.0 validation (layers L0–L4 of ../shared/docs/CFDI-VALIDATION.md): pure domain code."""

from services.validate.cfdi.certs import StampCertStore, TrustStore
from services.validate.cfdi.result import ValidationResult, Verdict
from services.validate.cfdi.rules import RuleId, SatCode, Violation
from services.validate.cfdi.validator import CfdiValidator, RunDuplicates

__all__ = ["CfdiValidator", "RuleId", "RunDuplicates", "SatCode", "StampCertStore", "TrustStore",
           "ValidationResult", "Verdict", "Violation"]
