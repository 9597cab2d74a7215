"""A document message as a stage receives it: the parsed body and the document's bytes, inline or
behind its claim check (an S3 staging key)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from shared.domain.messages import DocumentRef
from shared.domain.reasons import ReasonCode
from shared.runtime.errors import PermanentError
from shared.s3 import S3Store

D = TypeVar("D", bound=DocumentRef)


async def receive_document(value: bytes, model: type[D], s3: S3Store) -> tuple[D, bytes]:
    """Parse ``value`` as ``model``; a body that is not one is a permanent ``MALFORMED_MESSAGE``."""
    try:
        doc = model.model_validate_json(value)
    except ValidationError as exc:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE, str(exc)[:500]) from None
    if doc.xml is not None:
        return doc, doc.xml
    if not doc.claim_key:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE, "neither an inline document nor a claim check")
    return doc, await s3.get(doc.claim_key)
