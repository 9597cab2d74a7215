"""Documents between stages: the one size policy, and receiving a document message.

A document travels inside its message (its bytes after a JSON envelope: ``DOCUMENT_FRAME`` in
``shared.domain.messages``) only while the encoded message — value,
key and headers, what is actually produced — stays under ``INLINE_SHARE`` of the Kafka message
limit (``message_max_bytes``: the producers' ``message.max.bytes`` and every topic's
``max.message.bytes``).  Otherwise it waits in S3 under a claim check (``staging/<record_id>``)
and the message carries the key.  The margin leaves room for what a hop adds later: the
runtime's headers, a retry's or a dead letter's headers (error text, details), another stage's
facts.  Every stage that emits a document encodes it with :func:`encode_document`.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from shared.domain.messages import DocumentRef, MalformedBody
from shared.domain.reasons import ReasonCode
from shared.runtime.budget import current_hold
from shared.runtime.errors import PermanentError, TransientError
from shared.s3 import S3Store

D = TypeVar("D", bound=DocumentRef)

STAGING_PREFIX = "staging/"
INLINE_SHARE = 0.9
# Headers the runtime adds to an output (traceparent, tracestate, job id, priority, replay count):
# well under this; counted so the decision is about the message as produced, not its value alone.
RUNTIME_HEADERS_BYTES = 1024


def staging_key(record_id: str) -> str:
    """Deterministic: a redelivery overwrites the claim with the same bytes."""
    return f"{STAGING_PREFIX}{record_id}"


def inline_budget(message_max_bytes: int) -> int:
    """The largest message (value + key + headers) that may carry a document inline."""
    return int(message_max_bytes * INLINE_SHARE)


def message_bytes(value: bytes, key: str, headers: dict[str, str]) -> int:
    """A message's size as the producer counts it, runtime headers included."""
    return (len(value) + len(key.encode()) + sum(len(k) + len(v.encode()) for k, v in headers.items())
            + RUNTIME_HEADERS_BYTES)


async def encode_document(doc: D, data: bytes, s3: S3Store, message_max_bytes: int,
                          headers: dict[str, str] | None = None) -> tuple[D, bytes]:
    """``doc`` carrying ``data`` inline if its encoded message fits the budget, else a claim check.

    A document already behind a claim check stays there (same key, no second upload).  Returns
    the body as sent and its encoding.
    """
    if not doc.claim_key:
        budget = inline_budget(message_max_bytes)
        meta = message_bytes(b"", doc.record_id, headers or {})
        if meta + len(data) <= budget:  # else not worth copying it to find out
            inline = doc.model_copy(update={"xml": data, "claim_key": None})
            value = inline.encode()
            if meta + len(value) <= budget:
                return inline, value
        doc = doc.model_copy(update={"claim_key": await put_claim(s3, doc.record_id, data, doc.sha256)})
    claimed = doc.model_copy(update={"xml": None})
    return claimed, claimed.encode()


async def put_claim(s3: S3Store, record_id: str, data: bytes, sha256: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError  # loaded with the S3 client

    key = staging_key(record_id)
    client = await s3.client()
    try:
        await client.put_object(Bucket=s3.bucket, Key=key, Body=data, ContentType="application/xml",
                                Metadata={"sha256": sha256})
    except (ClientError, BotoCoreError, OSError) as exc:
        raise TransientError(f"s3: {exc}", downstream="s3") from exc
    return key


async def receive_document(value: bytes, model: type[D], s3: S3Store) -> tuple[D, bytes]:
    """Parse ``value`` as ``model``; a body that is not one is a permanent ``MALFORMED_MESSAGE``."""
    try:
        doc = model.decode(value)
    except (ValidationError, MalformedBody) as exc:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE, str(exc)[:500]) from None
    if doc.xml is not None:
        return doc, doc.xml
    if not doc.claim_key:
        raise PermanentError(ReasonCode.MALFORMED_MESSAGE, "neither an inline document nor a claim check")
    await current_hold().reserve(doc.size)  # the claimed document's bytes, before they are fetched
    return doc, await s3.get(doc.claim_key)
