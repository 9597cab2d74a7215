"""The headers of what a stage produces: outputs, retries and dead letters.

Runtime headers (``ff-*``) are per hop; the job id, replay count and re-drive generation travel
on; the trace context is the current span's.  A retry and a dead letter keep the origin of the
message (the topic, partition and offset it first came from, not the retry topic).
"""

from __future__ import annotations

import json

from shared.runtime import headers as H
from shared.runtime import tracing
from shared.runtime.message import Message
from shared.runtime.policy import DeadLetter, Retry

_TRAVEL = (H.JOB_ID, H.RULES, H.MAX_ATTEMPTS, H.REPLAY_COUNT, H.REDRIVE)
_PER_HOP = (H.TRACEPARENT, H.TRACESTATE)


def out_headers(msg: Message, extra: dict[str, str]) -> list[tuple[str, bytes]]:
    src = msg.headers
    out = {k: v for k, v in src.items() if not k.startswith(H.PREFIX) and k not in _PER_HOP}
    for k in _TRAVEL:
        if k in src:
            out[k] = src[k]
    if msg.priority:
        out[H.PRIORITY] = "1"
    out.update(extra)
    tracing.inject(out)
    return H.to_list(out)


def _origin(msg: Message) -> dict[str, str]:
    h = msg.headers
    return {
        H.ORIGIN_TOPIC: h.get(H.ORIGIN_TOPIC, msg.topic),
        H.ORIGIN_PARTITION: h.get(H.ORIGIN_PARTITION, str(msg.partition)),
        H.ORIGIN_OFFSET: h.get(H.ORIGIN_OFFSET, str(msg.offset)),
        H.ORIGIN_TIMESTAMP_MS: h.get(H.ORIGIN_TIMESTAMP_MS, str(msg.timestamp_ms)),
    }


def retry_headers(msg: Message, retry: Retry, now_ms: int) -> dict[str, str]:
    return {
        H.ATTEMPT: str(msg.attempt + (1 if retry.count_attempt else 0)),
        H.DUE_AT_MS: str(now_ms + int(retry.delay_s * 1000)),
        **_origin(msg),
        H.FIRST_FAILURE_MS: msg.headers.get(H.FIRST_FAILURE_MS, str(now_ms)),
        H.LAST_FAILURE_MS: str(now_ms),
        H.ERROR_MESSAGE: (retry.error or msg.headers.get(H.ERROR_MESSAGE, ""))[:1000],
    }


def dead_letter_headers(msg: Message, dead: DeadLetter, stage: str, now_ms: int, trace_id: str) -> dict[str, str]:
    extra = {
        **_origin(msg),
        H.STAGE: stage,
        H.REASON: dead.reason,
        H.ERROR_MESSAGE: dead.message[:2000],
        H.ATTEMPT: str(dead.attempts if dead.attempts is not None else msg.attempt + 1),
        H.FIRST_FAILURE_MS: msg.headers.get(H.FIRST_FAILURE_MS, str(now_ms)),
        H.LAST_FAILURE_MS: str(now_ms),
        H.TRACE_ID: trace_id,
    }
    if dead.details:
        extra[H.DETAILS] = json.dumps(dead.details, default=str)[:50_000]
    return extra
