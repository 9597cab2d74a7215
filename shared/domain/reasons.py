"""Reason codes: why a record left the happy path. Stable strings, declared once.

Validation rule ids (XSD, SELLO_INVALID, TOTAL_MISMATCH, ...) are reason codes too; they are
catalogued by the validator (services/validate/cfdi/rules.py) and travel as-is.
"""

from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    # runtime
    RETRIES_EXHAUSTED = "RETRIES_EXHAUSTED"
    MALFORMED_MESSAGE = "MALFORMED_MESSAGE"
    HANDLER_CRASHED = "HANDLER_CRASHED"
    CLAIM_CHECK_MISSING = "CLAIM_CHECK_MISSING"
    REPLAY_LIMIT = "REPLAY_LIMIT"
    # an output over the Kafka message limit (producer or topic): retrying cannot make it fit
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    # ingest
    UNKNOWN_RECORD = "UNKNOWN_RECORD"
    REDRIVE_EXHAUSTED = "REDRIVE_EXHAUSTED"
    # download
    FILE_NOT_FOUND = "FILE_NOT_FOUND"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"  # over max_document_bytes (was FILE_TOO_LARGE)
    PATH_OUTSIDE_ROOT = "PATH_OUTSIDE_ROOT"
    UNKNOWN_REGION = "UNKNOWN_REGION"
    # validate (the umbrella code; the rule list travels with the dead letter)
    INVALID_CFDI = "INVALID_CFDI"
    # store
    DUPLICATE_UUID = "DUPLICATE_UUID"
