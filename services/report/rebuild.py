"""Re-materialise the report tables from the system of record, one step (a batch of records) at a
time: ``fiscalflow report rebuild`` calls :meth:`Rebuilder.step` through the report API until the
scope is done (docs/decisions/0020-report-rebuild-through-the-service.md).

A step reads the next records of the scope from PostgreSQL in record-id order, asks ClickHouse
which of them it already holds as the registry says, and builds the missing ones' events:

- an archived record from the registry's report columns (migration 0070), or, for a record
  archived before them, from its archived document (S3, gzipped CFDI) — whose facts are then
  kept in the registry too, so the next rebuild or check needs no S3;
- a rejected or duplicate record as an :class:`Outcome` (status and reason from the registry).

Every event carries the record's region (``fiscal_records.region``): a record ClickHouse holds
under another one — its rows from before the reports kept regions have '' — is not "as the
registry says", and its event moves it (sink.py, ``set_regions``; ``regions_set``).

The events go through the service's one writer — the same lock and the same sink as the live
stream — so the sink's check-then-insert stays exact: a record the stream writes meanwhile is
counted once, and running a rebuild twice writes nothing the second time.  Where the scope got to
is kept in PostgreSQL (``report_rebuilds``) after every step: a rebuild killed half-way resumes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import asyncpg

from services.report.backend import ReportBackend
from services.report.events import ARCHIVED, Archived, Event, Outcome
from services.report.sink import Written
from services.report.verify import Scope
from shared.cfdi.facts import UnreadableDocument, read_document
from shared.domain.messages import CfdiFacts, InvoiceLine
from shared.domain.records import FINAL_STATUSES
from shared.runtime.errors import PermanentError
from shared.s3 import S3Store

log = logging.getLogger("fiscalflow.report.rebuild")

Json = dict[str, Any]
Writer = Callable[[Sequence[Event]], Awaitable[Written]]
K = TypeVar("K")
Lines = tuple[InvoiceLine, ...]

MAX_BATCH = 5000
S3_CONCURRENCY = 16  # documents read at once (a step's S3 reads overlap; parsing is on a thread)

_COLUMNS = ("record_id, status, COALESCE(reason, '') AS reason, COALESCE(job_id::text, '') AS job_id, tfd_uuid,"
            " issuer_rfc, issued_on, s3_key, receiver_rfc, fecha, tipo, moneda, tipo_cambio, total, total_mxn,"
            " COALESCE(archived_at, updated_at) AS archived_at, updated_at, region")
_SCAN = (f"SELECT {_COLUMNS} FROM fiscal_records WHERE record_id > $1 AND status = ANY($2::text[])"
         " AND ($3::date IS NULL OR issued_on >= $3) AND ($4::date IS NULL OR issued_on <= $4)"
         " ORDER BY record_id LIMIT $5")
_COUNT = ("SELECT count(*) FROM fiscal_records WHERE status = ANY($1::text[])"
          " AND ($2::date IS NULL OR issued_on >= $2) AND ($3::date IS NULL OR issued_on <= $3)")
# Facts read back from a document, kept for records archived before the registry held them.
_BACKFILL = """
UPDATE fiscal_records r SET receiver_rfc = f.receiver_rfc, fecha = f.fecha, tipo = f.tipo, moneda = f.moneda,
       tipo_cambio = f.tipo_cambio, total = f.total, total_mxn = f.total_mxn
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::numeric[])
     AS f(record_id, receiver_rfc, fecha, tipo, moneda, tipo_cambio, total, total_mxn)
WHERE r.record_id = f.record_id AND r.status = 'archived' AND r.total_mxn IS NULL
"""


def statuses(scope: Scope) -> list[str]:
    """A day range covers archived records only: a rejected record has no day in the reports."""
    return sorted(s.value for s in FINAL_STATUSES) if scope.complete else [ARCHIVED]


def scope_key(namespace: str, scope: Scope) -> str:
    return f"{namespace}|{scope.start or '*'}|{scope.end or '*'}"


@dataclass
class Step:
    """What one step did (or, in a dry run, would do)."""

    scanned: int = 0  # records of the scope read from PostgreSQL
    present: int = 0  # already in ClickHouse as the registry says
    # records found missing in ClickHouse (or with another outcome there) and handed to the writer,
    # which skips any the stream wrote meanwhile: the rows it wrote are the next two counts
    repaired: int = 0
    archived_rows: int = 0
    outcome_rows: int = 0
    from_postgres: int = 0  # archived records built from the registry's columns
    from_s3: int = 0  # … from their archived document
    regions_set: int = 0  # archived rows given their record's region (written before the reports kept it)
    # archived records whose document was read for its lines only (its facts from the registry, or
    # its row already in ClickHouse): a record's lines are nowhere else (table invoice_lines)
    lines_from_s3: int = 0
    line_rows: int = 0
    missing: list[str] = field(default_factory=list)  # archived records whose document is gone or unreadable
    after: str = ""  # the last record id of the step: the next one starts after it
    finished: bool = False
    dry_run: bool = False

    def to_json(self) -> Json:
        return asdict(self)


@dataclass(frozen=True)
class Checkpoint:
    after: str
    scanned: int
    written: int
    from_s3: int
    missing: int
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None

    def to_json(self) -> Json:
        out = asdict(self)
        for k in ("started_at", "updated_at", "finished_at"):
            out[k] = out[k].isoformat() if out[k] else None
        return out


def _ms(ts: dt.datetime) -> int:
    return int(ts.timestamp() * 1000)


def archived_from_registry(r: asyncpg.Record | dict[str, Any], facts: CfdiFacts | None = None) -> Archived:
    """The archived event the store stage sent for record ``r`` (its facts from the registry's
    columns, or ``facts`` read from its document)."""
    at: dt.datetime = r["archived_at"]
    if facts is None:
        return Archived(record_id=r["record_id"], uuid=r["tfd_uuid"].upper(), issuer_rfc=r["issuer_rfc"].upper(),
                        receiver_rfc=r["receiver_rfc"] or "", day=r["issued_on"], fecha=r["fecha"], tipo=r["tipo"],
                        moneda=r["moneda"], tipo_cambio=r["tipo_cambio"], total=r["total"], total_mxn=r["total_mxn"],
                        job_id=r["job_id"], s3_key=r["s3_key"] or "", archived_at=at, version=_ms(at),
                        region=r["region"])
    return Archived(record_id=r["record_id"], uuid=facts.uuid.upper(), issuer_rfc=facts.issuer_rfc.upper(),
                    receiver_rfc=facts.receiver_rfc, day=dt.date.fromisoformat(facts.fecha[:10]), fecha=facts.fecha,
                    tipo=facts.tipo, moneda=facts.moneda, tipo_cambio=facts.tipo_cambio, total=facts.total,
                    total_mxn=facts.total_mxn, job_id=r["job_id"], s3_key=r["s3_key"] or "", archived_at=at,
                    version=_ms(at), region=r["region"])


def _has_facts(r: asyncpg.Record | dict[str, Any]) -> bool:
    return all(r[k] is not None for k in ("total_mxn", "total", "tipo_cambio", "fecha", "tipo", "moneda",
                                          "issued_on", "tfd_uuid", "issuer_rfc"))


def _decode(blobs: list[tuple[dict[str, Any], bytes]]) -> list[tuple[dict[str, Any], CfdiFacts | None, Lines]]:
    """Gunzip and read each document, its facts and lines in one parse (on a worker thread: CPU-bound)."""
    out: list[tuple[dict[str, Any], CfdiFacts | None, Lines]] = []
    for r, blob in blobs:
        try:
            facts: CfdiFacts | None
            facts, lines = read_document(gzip.decompress(blob))
        except (OSError, EOFError, zlib.error, UnreadableDocument) as exc:
            log.warning("record %s: archived document %s unreadable: %s", r["record_id"], r["s3_key"], exc)
            facts, lines = None, ()
        if facts is not None and (facts.uuid != (r["tfd_uuid"] or "").upper()
                                  or (r["issued_on"] and facts.fecha[:10] != r["issued_on"].isoformat())):
            log.warning("record %s: archived document %s is not the record's (UUID %s, Fecha %s)", r["record_id"],
                        r["s3_key"], facts.uuid, facts.fecha)
            facts, lines = None, ()
        out.append((r, facts, lines))
    return out


async def fetch_archived(s3: S3Store, items: Sequence[tuple[K, str, str]]) -> list[tuple[K, bytes | None]]:
    """The archived document (gzip) of each (item, record id, S3 key), ``S3_CONCURRENCY`` at a time;
    None for a key that is gone.  An S3 failure (TransientError) propagates."""
    sem = asyncio.Semaphore(S3_CONCURRENCY)

    async def fetch(item: K, record_id: str, key: str) -> tuple[K, bytes | None]:
        async with sem:
            try:
                return item, await s3.get(key)
            except PermanentError:  # the key is gone
                log.warning("record %s: archived document %s is not in S3", record_id, key)
                return item, None

    return list(await asyncio.gather(*(fetch(*i) for i in items)))


async def archived_lines(s3: S3Store, items: Sequence[Archived]) -> dict[str, Lines | None]:
    """The lines of each archived event's document (its ``s3_key``), by record id: what the report
    stage writes for a stored event whose lines stayed in the archive (``lines_in_archive``).  None
    for a document gone, unreadable or not the event's (another UUID)."""
    fetched = await fetch_archived(s3, [(a, a.record_id, a.s3_key) for a in items])
    rows = [({"record_id": a.record_id, "s3_key": a.s3_key, "tfd_uuid": a.uuid, "issued_on": a.day}, blob)
            for a, blob in fetched if blob is not None]
    decoded = await asyncio.to_thread(_decode, rows)
    out: dict[str, Lines | None] = {a.record_id: None for a in items}
    out.update({r["record_id"]: lines for r, facts, lines in decoded if facts is not None})
    return out


class Rebuilder:
    def __init__(self, backend: ReportBackend, s3: S3Store, write: Writer, namespace: str = "") -> None:
        self.backend = backend
        self.pool = backend.pool
        self.s3 = s3
        self.write = write
        self.namespace = namespace
        self._lock = asyncio.Lock()  # one step at a time: a checkpoint is read, advanced, saved

    # ------------------------------------------------------------------ checkpoints
    async def checkpoint(self, scope: Scope) -> Checkpoint | None:
        row = await self.pool.fetchrow(
            "SELECT after, scanned, written, from_s3, missing, started_at, updated_at, finished_at"
            " FROM report_rebuilds WHERE scope = $1", scope_key(self.namespace, scope))
        return Checkpoint(**dict(row)) if row is not None else None

    async def plan(self, scope: Scope) -> Json:
        """How many records the scope holds and where an unfinished rebuild of it got to."""
        total = await self.pool.fetchval(_COUNT, statuses(scope), scope.start, scope.end)
        cp = await self.checkpoint(scope)
        return {"from": scope.start.isoformat() if scope.start else None,
                "to": scope.end.isoformat() if scope.end else None, "statuses": statuses(scope), "total": int(total),
                "checkpoint": cp.to_json() if cp else None,
                "resumes": cp is not None and cp.finished_at is None and cp.after != ""}

    async def _start_after(self, scope: Scope, restart: bool) -> str:
        cp = await self.checkpoint(scope)
        if cp is not None and cp.finished_at is None and not restart:
            return cp.after
        await self.pool.execute(
            "INSERT INTO report_rebuilds (scope) VALUES ($1) ON CONFLICT (scope) DO UPDATE SET after = '',"
            " scanned = 0, written = 0, from_s3 = 0, missing = 0, started_at = now(), updated_at = now(),"
            " finished_at = NULL", scope_key(self.namespace, scope))
        return ""

    async def _save(self, scope: Scope, step: Step) -> None:
        await self.pool.execute(
            "UPDATE report_rebuilds SET after = $2, scanned = scanned + $3, written = written + $4,"
            " from_s3 = from_s3 + $5, missing = missing + $6, updated_at = now(),"
            " finished_at = CASE WHEN $7 THEN now() END WHERE scope = $1",
            scope_key(self.namespace, scope), step.after, step.scanned, step.repaired, step.from_s3,
            len(step.missing), step.finished)

    # ------------------------------------------------------------------ a step
    async def step(self, scope: Scope, limit: int, *, dry_run: bool = False, after: str | None = None,
                   restart: bool = False, lines: bool = True) -> Step:
        """The next ``limit`` records of ``scope``: after the checkpoint (or ``after`` when given,
        which a dry run needs: it keeps no checkpoint)."""
        limit = max(1, min(limit, MAX_BATCH))
        async with self._lock:
            if after is None:
                after = "" if dry_run else await self._start_after(scope, restart)
            rows = await self.pool.fetch(_SCAN, after, statuses(scope), scope.start, scope.end, limit)
            step = Step(scanned=len(rows), after=rows[-1]["record_id"] if rows else after,
                        finished=len(rows) < limit, dry_run=dry_run)
            events = await self._missing_events(rows, step, lines)
            if events and not dry_run:
                written = await self.write(events)
                step.archived_rows, step.outcome_rows = written.archived, written.outcomes
                step.line_rows = written.lines
                step.regions_set = written.regions
            if not dry_run:
                await self._save(scope, step)
        if step.finished and not dry_run:
            log.info("rebuild of %s finished", scope.label())
        return step

    async def _missing_events(self, rows: list[asyncpg.Record], step: Step, lines: bool = True) -> list[Event]:
        """Events for the records ClickHouse does not hold as the registry says (a hint read before
        the write: the sink checks again under the write lock)."""
        keys = [(r["issued_on"], r["tfd_uuid"].upper()) for r in rows
                if r["status"] == ARCHIVED and r["issued_on"] and r["tfd_uuid"]]
        archived_ids = [r["record_id"] for r in rows if r["status"] == ARCHIVED]
        present, outcomes, with_lines = await self.backend.ch(
            self._present, keys, [r["record_id"] for r in rows], archived_ids)
        if not lines:  # the totals alone: no document is read for its lines
            with_lines = set(with_lines) | set(archived_ids)
        events: list[Event] = []
        need_documents = []  # archived records whose document is read (their facts, their lines, or both)
        written: set[str] = set()  # … of them, those ClickHouse holds already (their lines are missing)
        for r in rows:
            current = outcomes.get(r["record_id"])
            if r["status"] == ARCHIVED:
                # in the reports as the registry says: its row, under the record's region (a row from
                # before the reports kept regions has ''; the sink moves it: set_regions)
                uuid = (r["tfd_uuid"] or "").upper()
                in_reports = (current == (ARCHIVED, "", r["region"]) and uuid in present
                              and present[uuid][1] == r["region"])
                if not r["tfd_uuid"] or not r["issued_on"]:
                    step.missing.append(r["record_id"])  # not archived by the store stage: nothing to build from
                elif in_reports and r["record_id"] in with_lines:
                    step.present += 1
                elif in_reports:
                    need_documents.append(r)  # the row is there, its lines are not
                    written.add(r["record_id"])
                elif _has_facts(r) and r["record_id"] in with_lines:
                    events.append(archived_from_registry(r))
                    step.from_postgres += 1
                elif _has_facts(r):
                    need_documents.append(r)  # the lines are in the document only
                    step.from_postgres += 1
                else:
                    need_documents.append(r)
            elif current == (r["status"], r["reason"], r["region"]) or (current is not None and current[0] == ARCHIVED):
                step.present += 1  # archived in ClickHouse is final there (the sink keeps it)
            else:
                events.append(Outcome(record_id=r["record_id"], outcome=r["status"], reason=r["reason"],
                                      job_id=r["job_id"], version=_ms(r["updated_at"]), region=r["region"]))
        if need_documents and step.dry_run:
            step.from_s3 = sum(1 for r in need_documents if not _has_facts(r))
            step.lines_from_s3 = len(need_documents) - step.from_s3
            step.repaired = len(events) + len(need_documents)
            return events
        if need_documents:
            events += await self._from_documents(need_documents, step, written)
        step.repaired = len(events)
        return events

    def _present(self, keys: list[tuple[dt.date, str]], record_ids: list[str],
                 archived_ids: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, tuple[str, str, str]],
                                                   set[str]]:
        sink = self.backend.sink
        return sink.present_regions(keys), sink.outcomes(record_ids), sink.records_with_lines(archived_ids)

    async def _from_documents(self, rows: list[asyncpg.Record], step: Step, written: set[str]) -> list[Event]:
        """Events of archived records built with their documents: the facts from the document where
        the registry has none (kept in the registry then), the lines always.  A record whose
        document is gone or unreadable is ``missing``; one with facts in the registry is still
        written from them, without lines."""
        fetched = await fetch_archived(self.s3, [(dict(r), r["record_id"], r["s3_key"]) for r in rows if r["s3_key"]])
        decoded = await asyncio.to_thread(_decode, [(r, blob) for r, blob in fetched if blob is not None])
        unread = [dict(r) for r in rows if not r["s3_key"]] + [r for r, blob in fetched if blob is None]
        unread += [r for r, facts, _ in decoded if facts is None]
        events: list[Event] = []
        read: list[tuple[str, CfdiFacts]] = []
        for r, facts, lines in decoded:
            if facts is None:
                continue
            if _has_facts(r):
                events.append(replace(archived_from_registry(r), lines=lines))
                step.lines_from_s3 += 1
            else:
                events.append(replace(archived_from_registry(r, facts), lines=lines))
                read.append((r["record_id"], facts))
        for r in unread:
            step.missing.append(r["record_id"])
            if _has_facts(r) and r["record_id"] not in written:
                events.append(archived_from_registry(r))
        step.from_s3 = len(read)
        if read:
            columns = zip(*[(rid, f.receiver_rfc, f.fecha, f.tipo, f.moneda, f.tipo_cambio, f.total, f.total_mxn)
                            for rid, f in read], strict=True)
            await self.pool.execute(_BACKFILL, *(list(c) for c in columns))
        return events
