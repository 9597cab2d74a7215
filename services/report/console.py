"""The web console (docs/console.md): its static files at ``/`` and ``/console/...``, and the read
routes it needs besides the reports', on the report API.

- ``GET /api/v1/pipeline``: per stage the consumer lag and consumed rate (Kafka), the records
  waiting for it (the registry), the replicas seen lately (audit trail, stage conditions) and its
  halted or paused replicas with their reasons (``stage_conditions``: a pause is an open breaker).
- ``GET /api/v1/jobs``: the latest jobs with their progress; ``GET /api/v1/jobs/{id}/stalled``.
- ``GET /api/v1/dead-letters``, ``GET /api/v1/dead-letters/{letter_id}``: the dead-letter topic,
  read as ``fiscalflow dlq`` reads it (shared/dlq/run.py), cached a few seconds.
- ``POST /api/v1/dead-letters/replay``: a dry run or a replay, the CLI's own (ledger, plan,
  execute); the admin token only.
- ``GET /api/v1/search?q=``: records by record id, TFD UUID or RFC.

The static files hold no data and need no token (the page sends the bearer token on its API
calls); they are served with a strict Content-Security-Policy (no inline script, nothing from
another origin).  Every API route needs the read token like the rest of the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from services.report.api import _job_id
from services.report.app import app_id
from services.report.backend import ReportBackend
from services.report.queries import in_progress_counts
from shared.db import conditions, jobs, stalled
from shared.dlq.filters import DeadLetterFilter
from shared.dlq.model import DeadLetter
from shared.dlq.reader import DeadLetterTopicMissing
from shared.dlq.replay import Outcome, ReplayOptions, latest_per_record
from shared.dlq.run import read_letters, replay_letters
from shared.domain.records import FINAL_STATUSES
from shared.http_auth import ApiAuth
from shared.http_errors import error_responses
from shared.runtime.kafka import client_config
from shared.settings import Settings
from shared.topics import TOPOLOGY, Stage

log = logging.getLogger("fiscalflow.report.console")

CONSOLE_DIR = Path(__file__).parent / "console"
# Everything from this origin only: no inline script or style, no CDN, not framed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}

CACHE_S = 5.0  # the dead letters and the Kafka offsets are read at most this often, whoever asks
MAX_LETTERS = 50_000  # messages of the dead-letter topic read for a listing (a bigger topic: `truncated`)
RATE_WINDOW_S = 60  # transitions counted per stage over the last minute
REPLICA_WINDOW_S = 300  # a replica that wrote an audit event this recently counts as running
AUDIT_TAIL = 50_000  # the newest audit events looked at (by event id: the primary key, no scan)
MAX_RESULTS = 100
KAFKA_TIMEOUT_S = 3.0  # each offset request
MAX_REPLAY = 1000  # dead letters one replay request sends at most
WAITS_FOR = {status.value: stages for status, stages in jobs.WAITS_FOR.items()}  # status -> stages it waits for

T = TypeVar("T")


# ---------------------------------------------------------------- static files
class ConsoleFiles(StaticFiles):
    """The console's files with the security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        resp = await super().get_response(path, scope)
        resp.headers.update(STATIC_HEADERS)
        return resp


async def _index(request: Request) -> Response:
    return FileResponse(CONSOLE_DIR / "index.html", headers=STATIC_HEADERS)


# ---------------------------------------------------------------- response models
class Condition(BaseModel):
    stage: str
    replica: str
    host: str
    state: Literal["halted", "paused"]
    reason: str
    since: str
    updated_at: str


class StageView(BaseModel):
    stage: str
    state: Literal["running", "idle", "halted", "paused"] = Field(
        description="halted or paused when a replica says so; running when it moved records lately or has lag.")
    lag: int | None = Field(description="Messages its consumer groups have not committed (null: Kafka not read).")
    rate_per_s: float | None = Field(description="Messages consumed per second between the last two offset reads.")
    in_flight: int = Field(description="Records whose registry status waits for this stage.")
    transitions_last_minute: int = Field(description="Audit events this stage wrote in the last minute.")
    replicas: int = Field(description="Replicas seen: audit events in the last 5 minutes, or a condition.")
    replica_ids: list[str]
    conditions: list[Condition]
    groups: dict[str, list[str]] = Field(description="Consumer group -> the topics it reads.")


class Pipeline(BaseModel):
    generated_at: str
    stages: list[StageView]
    breakers: list[Condition] = Field(description="Paused replicas: the breaker of a dependency they need is open.")
    kafka_error: str = Field(description="Why the offsets could not be read (empty: they were).")


class JobRow(BaseModel):
    job_id: str
    status: str
    priority: str
    record_count: int
    finished: int
    progress: float
    created_at: str
    completed_at: str | None


class Jobs(BaseModel):
    jobs: list[JobRow]


class StalledRow(BaseModel):
    record_id: str
    status: str
    updated_at: str
    redrives: int


class Stalled(BaseModel):
    job_id: str
    lease_s: float | None
    records: list[StalledRow]


class LetterRow(BaseModel):
    letter_id: str
    record_id: str
    position: str
    stage: str
    reason: str
    error: str
    attempts: int
    replay_count: int
    failed_at: str
    job_id: str | None
    origin_topic: str
    copies: int


class LetterGroup(BaseModel):
    stage: str
    reason: str
    count: int
    records: int


class Letters(BaseModel):
    total: int = Field(description="Dead letters matching the filter (each once, redelivered copies folded in).")
    truncated: bool = Field(description="The topic holds more messages than one listing reads.")
    groups: list[LetterGroup] = Field(description="The matching dead letters by stage and reason.")
    letters: list[LetterRow] = Field(description="The newest ``limit`` of them, newest first.")


class LetterDetail(LetterRow):
    dlq_topic: str
    origin_partition: int | None
    origin_offset: int | None
    first_failure: str | None
    last_failure: str | None
    trace_id: str
    value_size: int
    details: Any = None
    rules: list[str] = Field(description="The validation rules that failed (validate stage), with SAT codes.")
    headers: dict[str, str]


class ReplayRequest(BaseModel):
    """Which dead letters: by id, or by stage and/or reason, or ``all``.  A dry run by default."""

    model_config = ConfigDict(extra="forbid")

    letter_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list,
                                                                                  max_length=1000)
    stage: Stage | None = None
    reason: str | None = Field(None, min_length=1, max_length=100)
    all: bool = Field(False, description="Every dead letter (needed when no other filter is given).")
    dry_run: bool = Field(True, description="Say what would be sent; send nothing.")
    max_replays: int = Field(3, ge=0, le=100, description="A record replayed this often goes to parking instead.")
    limit: int = Field(MAX_REPLAY, ge=1, le=MAX_REPLAY, description="At most this many dead letters per request "
                       "(`fiscalflow dlq replay` has no such bound).")


class ReplayItem(BaseModel):
    letter_id: str
    record_id: str
    position: str
    stage: str
    reason: str
    outcome: str
    target_topic: str
    replay_count: int
    current_status: str | None


class ReplayResult(BaseModel):
    dry_run: bool
    outcomes: dict[str, int]
    items: list[ReplayItem]


class Day(BaseModel):
    day: str
    count: int


class Days(BaseModel):
    days: list[Day] = Field(description="Days of Fecha with archived documents, the latest first.")


class SearchHit(BaseModel):
    record_id: str
    matched_by: Literal["record_id", "tfd_uuid", "issuer_rfc"]
    status: str
    reason: str | None
    region: str
    tfd_uuid: str | None
    issuer_rfc: str | None
    issued_on: str | None
    updated_at: str


class Search(BaseModel):
    query: str
    records: list[SearchHit]
    more: bool = Field(description="More records match than this answer holds.")


def _iso(t: dt.datetime | dt.date | None) -> str | None:
    return t.isoformat() if t is not None else None


def _condition(c: conditions.StageConditionRow) -> Condition:
    return Condition.model_validate(c.to_json())


def _letter_row(d: DeadLetter) -> dict[str, Any]:
    return {"letter_id": d.letter_id, "record_id": d.record_id, "position": d.position, "stage": d.stage,
            "reason": d.reason, "error": d.error, "attempts": d.attempts, "replay_count": d.replay_count,
            "failed_at": d.failed_at.isoformat(), "job_id": d.job_id, "origin_topic": d.origin_topic,
            "copies": len(d.copies)}


def _rules(details: Any) -> list[str]:
    """``RULE (SAT code)`` of each failed validation rule in a validate dead letter's details."""
    rules = details.get("rules") if isinstance(details, dict) else None
    if not isinstance(rules, list):
        return []
    codes = details.get("sat_codes")
    codes = codes if isinstance(codes, list) else []
    return [f"{r} ({codes[i]})" if i < len(codes) and codes[i] else str(r) for i, r in enumerate(rules)]


class Cached:
    """One value refreshed at most every ``ttl_s``; callers at the same time share one refresh."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._at = -1e9
        self._value: Any = None
        self._lock = asyncio.Lock()

    async def get(self, load: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            if time.monotonic() - self._at > self.ttl_s:
                self._value = await load()
                self._at = time.monotonic()
            value: T = self._value
            return value

    def invalidate(self) -> None:
        self._at = -1e9


def days_with_documents(client: Client, limit: int) -> list[Day]:
    """The latest days (of Fecha) the reports hold archived documents of (ClickHouse, one thread)."""
    rows = client.query("SELECT day, sum(n) AS c FROM daily_totals GROUP BY day HAVING c != 0 ORDER BY day DESC"
                        " LIMIT %(limit)s", parameters={"limit": limit}, settings={"max_threads": 1}).result_rows
    return [Day(day=r[0].isoformat(), count=int(r[1])) for r in rows]


# ---------------------------------------------------------------- Kafka offsets
def stage_groups(namespace: str) -> dict[str, dict[str, list[str]]]:
    """Per stage: consumer group -> the topics it reads, as the running stages subscribe them."""
    out = {}
    for stage, topology in TOPOLOGY.items():
        group = app_id(namespace) if stage is Stage.REPORT else None
        out[stage.value] = topology.subscriptions(group, namespace)
    return out


def read_offsets(settings: Settings, groups_of: dict[str, dict[str, list[str]]]) -> dict[str, tuple[int, int]]:
    """Per stage: (lag, committed offsets summed) of its groups.  Blocking: run it in a thread.
    The local broker under-reports partition ends: there its lag is a lower bound."""
    out: dict[str, tuple[int, int]] = {}
    for stage, groups in groups_of.items():
        lag = done = 0
        for group, topics in groups.items():
            c = Consumer({**client_config(settings), "group.id": group, "enable.auto.commit": False})
            try:
                md = c.list_topics(timeout=KAFKA_TIMEOUT_S)  # a broker out of reach: the first raises
                parts = [TopicPartition(t, p) for t in topics if t in md.topics for p in md.topics[t].partitions]
                for tp in c.committed(parts, timeout=KAFKA_TIMEOUT_S) if parts else []:
                    low, high = c.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
                    at = tp.offset if tp.offset >= 0 else low
                    lag += max(0, high - at)
                    done += max(0, at)
            finally:
                c.close()
        out[stage] = (lag, done)
    return out


class OffsetSampler:
    """The stages' lag now and their consumed rate since the previous sample (at least CACHE_S apart)."""

    def __init__(self, settings: Settings, namespace: str) -> None:
        self.settings = settings
        self.groups = stage_groups(namespace)
        self.cache = Cached(CACHE_S)
        self._last: tuple[float, dict[str, tuple[int, int]]] | None = None
        self._rates: dict[str, float] = {}

    async def sample(self) -> tuple[dict[str, tuple[int, int]], dict[str, float], str]:
        return await self.cache.get(self._measure)

    async def _measure(self) -> tuple[dict[str, tuple[int, int]], dict[str, float], str]:
        try:
            now = await asyncio.wait_for(asyncio.to_thread(read_offsets, self.settings, self.groups), 30)
        except (TimeoutError, KafkaException, OSError) as exc:
            return {}, {}, f"{type(exc).__name__}: {exc}"
        at = time.monotonic()
        if self._last is not None and at - self._last[0] >= 1.0:
            before_at, before = self._last
            self._rates = {s: round(max(0, done - before.get(s, (0, done))[1]) / (at - before_at), 2)
                           for s, (_, done) in now.items()}
        self._last = (at, now)
        return now, self._rates, ""


# ---------------------------------------------------------------- the routes
_AUDIT_SQL = """
WITH recent AS (SELECT stage, actor, created_at FROM audit_events ORDER BY event_id DESC LIMIT $3)
SELECT stage, actor, count(*) FILTER (WHERE created_at > now() - make_interval(secs => $1)) AS moved
FROM recent WHERE created_at > now() - make_interval(secs => $2) GROUP BY stage, actor
"""

_JOBS_SQL = """
SELECT j.job_id::text AS job_id, j.status, j.priority, j.created_at, j.completed_at, count(m.record_id) AS records,
       count(m.record_id) FILTER (WHERE r.status IS NULL OR r.status = ANY($2::text[])) AS finished
FROM (SELECT * FROM jobs ORDER BY created_at DESC LIMIT $1) j
LEFT JOIN job_records m ON m.job_id = j.job_id LEFT JOIN fiscal_records r ON r.record_id = m.record_id
GROUP BY j.job_id, j.status, j.priority, j.created_at, j.completed_at ORDER BY j.created_at DESC
"""

_SEARCH_SQL = """
SELECT record_id, status, reason, region, tfd_uuid, issuer_rfc, issued_on, updated_at,
       CASE WHEN record_id = $1 THEN 'record_id' WHEN upper(tfd_uuid) = upper($1) THEN 'tfd_uuid'
            ELSE 'issuer_rfc' END AS matched_by
FROM fiscal_records
WHERE record_id = $1 OR upper(tfd_uuid) = upper($1) OR issuer_rfc = upper($1)
ORDER BY (record_id = $1) DESC, updated_at DESC LIMIT $2
"""


class Console:
    """The console's routes on the report API, over the report backend and the settings' Kafka."""

    def __init__(self, backend: ReportBackend, settings: Settings, namespace: str) -> None:
        self.backend = backend
        self.settings = settings
        self.namespace = namespace
        self.offsets = OffsetSampler(settings, namespace)
        self.letters = Cached(CACHE_S)

    async def _letters(self) -> tuple[list[DeadLetter], bool]:
        async def load() -> tuple[list[DeadLetter], bool]:
            try:
                read = await asyncio.to_thread(read_letters, self.settings, self.namespace, False, MAX_LETTERS + 1)
            except DeadLetterTopicMissing:
                return [], False
            except (KafkaException, RuntimeError) as exc:
                raise HTTPException(503, f"dead-letter topic not read: {exc}", headers={"Retry-After": "5"}) from None
            return read, sum(1 + len(d.copies) for d in read) > MAX_LETTERS

        return await self.letters.get(load)

    async def pipeline(self) -> Pipeline:
        pool = self.backend.pool
        (offsets, rates, kafka_error), conds, waiting, audit = await asyncio.gather(
            self.offsets.sample(), conditions.current(pool, self.namespace), in_progress_counts(pool),
            pool.fetch(_AUDIT_SQL, float(RATE_WINDOW_S), float(REPLICA_WINDOW_S), AUDIT_TAIL))
        moved: dict[str, int] = defaultdict(int)
        replicas: dict[str, set[str]] = defaultdict(set)
        for r in audit:
            moved[r["stage"]] += int(r["moved"])
            replicas[r["stage"]].add(r["actor"])
        replicas[Stage.REPORT.value].add(f"report/{self.settings.replica_id}")  # this one, answering
        by_stage: dict[str, list[Condition]] = defaultdict(list)
        for c in conds:
            by_stage[c.stage].append(_condition(c))
            replicas[c.stage].add(f"{c.stage}/{c.replica}")
        stages = []
        for stage in Stage:
            s = stage.value
            in_flight = sum(n for status, n in waiting.items() if stage in WAITS_FOR.get(status, ()))
            lag = offsets[s][0] if s in offsets else None
            states = {c.state for c in by_stage[s]}
            state = ("halted" if "halted" in states else "paused" if "paused" in states
                     else "running" if moved[s] or (lag or 0) > 0 or rates.get(s) else "idle")
            stages.append(StageView(stage=s, state=state, lag=lag, rate_per_s=rates.get(s), in_flight=in_flight,
                                    transitions_last_minute=moved[s], replicas=len(replicas[s]),
                                    replica_ids=sorted(replicas[s]), conditions=by_stage[s],
                                    groups=self.offsets.groups[s]))
        return Pipeline(generated_at=dt.datetime.now(dt.UTC).isoformat(), stages=stages,
                        breakers=[_condition(c) for c in conds if c.state == "paused"], kafka_error=kafka_error)

    async def jobs(self, limit: int) -> Jobs:
        rows = await self.backend.pool.fetch(_JOBS_SQL, limit, [s.value for s in FINAL_STATUSES])
        return Jobs(jobs=[JobRow(job_id=r["job_id"], status=r["status"], priority=r["priority"],
                                 record_count=int(r["records"]), finished=int(r["finished"]),
                                 progress=1.0 if not r["records"] else round(r["finished"] / r["records"], 4),
                                 created_at=r["created_at"].isoformat(), completed_at=_iso(r["completed_at"]))
                          for r in rows])

    async def stalled(self, job_id: str, limit: int) -> Stalled:
        lease = self.backend.redrive_lease_s
        rows = [] if lease is None else await stalled.stalled_records(self.backend.pool, lease, job_id, limit)
        return Stalled(job_id=job_id, lease_s=lease, records=[
            StalledRow(record_id=r.record_id, status=r.status, updated_at=r.updated_at.isoformat(),
                       redrives=r.redrives) for r in rows])

    async def dead_letters(self, stage: str | None, reason: str | None, limit: int) -> Letters:
        letters, truncated = await self._letters()
        flt = DeadLetterFilter(stages=frozenset({stage} if stage else ()),
                               reasons=frozenset({reason} if reason else ()))
        chosen = flt.select(letters)
        groups: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
        for d in chosen:
            groups[(d.stage, d.reason)].append(d)
        return Letters.model_validate({
            "total": len(chosen), "truncated": truncated,
            "groups": [{"stage": s, "reason": r, "count": len(g), "records": len({d.record_id for d in g})}
                       for (s, r), g in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))],
            "letters": [_letter_row(d) for d in reversed(chosen[-limit:])]})

    async def dead_letter(self, letter_id: str) -> LetterDetail:
        letters, _ = await self._letters()
        for d in letters:
            if d.letter_id == letter_id:
                return LetterDetail.model_validate({
                    **_letter_row(d), "dlq_topic": d.dlq_topic, "origin_partition": d.origin_partition,
                    "origin_offset": d.origin_offset, "first_failure": _iso(d.first_failure),
                    "last_failure": _iso(d.last_failure), "trace_id": d.trace_id, "value_size": d.value_size,
                    "details": d.details, "rules": _rules(d.details), "headers": d.headers})
        raise HTTPException(404, f"dead letter {letter_id} not found (read again: the listing is {CACHE_S:.0f} s old "
                                 "at most)")

    async def replay(self, body: ReplayRequest) -> ReplayResult:
        ids = set(body.letter_ids)
        if not (ids or body.stage or body.reason or body.all):
            raise HTTPException(400, "no dead letters chosen: give letter_ids, stage and/or reason, or all=true")
        # Chosen on the listing (cached, without the messages' values): an unknown id is a 404 and an
        # empty choice an empty answer without reading the topic again.
        listed, _ = await self._letters()
        missing = ids - {d.letter_id for d in listed}
        if missing:
            raise HTTPException(404, f"no such dead letter: {', '.join(sorted(missing)[:5])} (the listing is "
                                     f"{CACHE_S:.0f} s old at most: read it again)")
        flt = DeadLetterFilter(stages=frozenset({body.stage.value} if body.stage else ()),
                               reasons=frozenset({body.reason} if body.reason else ()),
                               records=frozenset(d.record_id for d in listed if d.letter_id in ids), limit=body.limit)
        outcomes = dict.fromkeys((o.value for o in Outcome), 0)
        if not any(flt.matches(d) for d in listed):
            return ReplayResult(dry_run=body.dry_run, outcomes=outcomes, items=[])
        try:
            letters = await asyncio.to_thread(read_letters, self.settings, self.namespace, True)
        except DeadLetterTopicMissing as exc:
            raise HTTPException(404, str(exc)) from None
        current, superseded = latest_per_record(letters, flt)
        if ids:  # the chosen letters only (their records' other letters decided which is the latest)
            current = [d for d in current if d.letter_id in ids]
            superseded = [d for d in superseded if d.letter_id in ids]
        opts = ReplayOptions(max_replays=body.max_replays, dry_run=body.dry_run, namespace=self.namespace)
        actor = f"dlq-replay/console@{socket.gethostname()}"
        try:
            async with self.backend.pool.acquire() as conn:
                summary = await replay_letters(conn, self.settings, current, superseded, opts, actor)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise HTTPException(503, f"{type(exc).__name__}: {exc}; what was sent is in the ledger, try again",
                                headers={"Retry-After": "5"}) from None
        if not body.dry_run:
            self.letters.invalidate()
        outcomes.update({o.value: n for o, n in summary.outcomes.items()})
        return ReplayResult(dry_run=body.dry_run, outcomes=outcomes,
                            items=[ReplayItem(letter_id=i.letter.letter_id, record_id=i.letter.record_id,
                                              position=i.letter.position, stage=i.letter.stage,
                                              reason=i.letter.reason, outcome=i.outcome.value,
                                              target_topic=i.target_topic, replay_count=i.replay_count,
                                              current_status=i.current_status) for i in summary.items])

    async def search(self, q: str, limit: int) -> Search:
        rows = await self.backend.pool.fetch(_SEARCH_SQL, q, limit + 1)
        hits = [SearchHit(record_id=r["record_id"], matched_by=r["matched_by"], status=r["status"],
                          reason=r["reason"], region=r["region"], tfd_uuid=r["tfd_uuid"], issuer_rfc=r["issuer_rfc"],
                          issued_on=_iso(r["issued_on"]), updated_at=r["updated_at"].isoformat())
                for r in rows[:limit]]
        return Search(query=q, records=hits, more=len(rows) > limit)

    # ------------------------------------------------------------ installing them
    def install(self, api: FastAPI, auth: ApiAuth) -> None:
        """The API routes on ``api`` (whose dependencies ask every route for the read token), and the
        static files, open: they hold no data."""
        admin = Depends(auth.require_admin("replay dead letters"))

        @api.get("/api/v1/pipeline", responses=error_responses(503))
        async def pipeline() -> Pipeline:
            """Per stage: state (halted/paused with the reason), lag, consumed rate, records waiting
            for it, replicas; and the open breakers."""
            try:
                return await self.pipeline()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise HTTPException(503, f"{type(exc).__name__}: {exc}", headers={"Retry-After": "5"}) from None

        @api.get("/api/v1/jobs")
        async def job_list(limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 20) -> Jobs:
            """The latest jobs, newest first, with their progress (final members / members)."""
            return await self.jobs(limit)

        @api.get("/api/v1/jobs/{job_id}/stalled")
        async def job_stalled(job_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Stalled:
            """The job's stalled records (not final, no transition for longer than the re-drive lease)."""
            job_id = _job_id(job_id)
            if not await self.backend.job_exists(job_id):
                raise HTTPException(404, f"job {job_id} not found")
            return await self.stalled(job_id, limit)

        @api.get("/api/v1/dead-letters", responses=error_responses(503))
        async def dead_letters(stage: Stage | None = None,
                               reason: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
                               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Letters:
            """Dead letters by stage and reason, and the newest ``limit`` of them (each once)."""
            return await self.dead_letters(stage.value if stage else None, reason, limit)

        @api.get("/api/v1/dead-letters/{letter_id}", responses=error_responses(503))
        async def dead_letter(letter_id: str) -> LetterDetail:
            """One dead letter: every header, the details, the validation rules that failed."""
            return await self.dead_letter(letter_id)

        @api.post("/api/v1/dead-letters/replay", dependencies=[admin], responses=error_responses(403, 503))
        async def replay(body: ReplayRequest) -> ReplayResult:
            """A dry run (the default) or a replay, as ``fiscalflow dlq replay`` does it: each
            record's latest dead letter, once (the replay ledger), archived records skipped."""
            return await self.replay(body)

        @api.get("/api/v1/reports/days")
        async def days(limit: Annotated[int, Query(ge=1, le=366)] = 31) -> Days:
            """The latest days of Fecha with archived documents and their count (what the daily
            report can be asked for)."""
            return Days(days=await self.backend.ch(days_with_documents, self.backend.client, limit))

        @api.get("/api/v1/search")
        async def search(q: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$",
                                                 description="A record id, a TFD UUID or an issuer RFC.")],
                         limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 50) -> Search:
            """Records whose id, TFD UUID or issuer RFC is ``q`` (the record id first)."""
            return await self.search(q.strip(), limit)

        mount_static(api)


def mount_static(api: FastAPI) -> None:
    """``/`` and ``/console/...``: plain Starlette routes, outside the API's token dependency."""
    api.add_route("/", _index, methods=["GET"], include_in_schema=False)
    api.mount("/console", ConsoleFiles(directory=CONSOLE_DIR), name="console")

