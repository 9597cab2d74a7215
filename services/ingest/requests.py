"""What arrives on the ingest topic: an ``IngestRequest`` (JSON) or a bare record id (UTF-8 text)."""

from __future__ import annotations

import uuid

from pydantic import ValidationError

from shared.domain.messages import IngestRequest
from shared.domain.reasons import ReasonCode
from shared.runtime import Message, PermanentError
from shared.runtime import headers as H


def parse_request(msg: Message) -> IngestRequest:
    raw = msg.value.strip()
    try:
        if raw.startswith(b"{"):
            req = IngestRequest.model_validate_json(raw)
        else:
            # A bare id; the key is the id too when the producer set one.
            req = IngestRequest(record_id=(raw.decode("utf-8") if raw else msg.record_id))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE, str(exc)[:500]) from None
    job_id = req.job_id or msg.headers.get(H.JOB_ID) or None
    if job_id is not None:
        try:
            job_id = str(uuid.UUID(job_id))
        except ValueError:
            raise PermanentError(ReasonCode.MALFORMED_MESSAGE, f"job id {job_id!r} is not a UUID") from None
    if msg.key and msg.record_id != req.record_id:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE,
                             f"key {msg.record_id!r} and record id {req.record_id!r} differ")
    return req.model_copy(update={"job_id": job_id})
