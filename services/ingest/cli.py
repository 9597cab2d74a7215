"""``fiscalflow publish``, ``fiscalflow register`` and ``fiscalflow job submit|show``: the ways in."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from shared.cli.api_client import Api, IngestUrl, Token, api, call, die
from shared.domain.records import Priority, ValidationProfile

job_app = typer.Typer(no_args_is_help=True, help="Submit jobs to the ingest HTTP API and follow them.")
records_app = typer.Typer(no_args_is_help=True, help="Records in the registry: find and re-drive stalled ones.")

_AGE = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _ids(values: list[str]) -> list[str]:
    """Ids from the arguments; ``-`` reads them from stdin, one a line."""
    out: list[str] = []
    for v in values:
        if v == "-":
            out += [line.strip() for line in sys.stdin if line.strip()]
        else:
            out.append(v)
    return out


def publish(
    ids: Annotated[list[str], typer.Argument(help="Record ids, or - to read them from stdin (one a line).")],
    priority: Annotated[Priority, typer.Option(help="high: the priority lane.")] = Priority.NORMAL,
    job: Annotated[str | None, typer.Option(help="Job id (UUID) the records count towards.")] = None,
) -> None:
    """Publish record ids straight to the ingest topic (keyed by record id)."""
    from confluent_kafka import Producer

    from services.ingest.publisher import encode, ingest_topic
    from shared.runtime.kafka import client_config
    from shared.settings import Settings

    if job is not None:
        try:
            job = str(uuid.UUID(job))
        except ValueError:
            raise typer.BadParameter(f"{job!r} is not a UUID", param_hint="--job") from None
    records = _ids(ids)
    settings = Settings()
    # Not idempotent, acks from every replica: see producer_config (the local broker loses
    # acknowledged idempotent batches across a restart; a duplicate id is harmless).
    producer = Producer({**client_config(settings), "enable.idempotence": False, "acks": "all",
                         "partitioner": "murmur2_random", "linger.ms": 5})
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    topic = ingest_topic(priority)
    for rid in records:
        key, value, headers = encode(rid, job, priority)
        kafka_headers: list[tuple[str, str | bytes | None]] = list(headers)
        while True:
            try:
                producer.produce(topic, value, key, headers=kafka_headers, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain it
                producer.poll(0.1)
    left = producer.flush(60)
    if failures or left:
        typer.echo(f"{len(failures) + left} of {len(records)} not delivered: {failures[:1]}", err=True)
        raise typer.Exit(1)
    typer.echo(f"published {len(records)} record id(s) to {topic}" + (f" (job {job})" if job else ""))


def register_manifest(
    manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV (with header) or JSON lines.")],
) -> None:
    """Register records from a manifest (record_id, region, path, sha256[, size]) in one COPY."""
    import asyncio

    from services.ingest.manifest import ManifestError, parse_manifest
    from shared.db.migrate import connect_pool
    from shared.db.records import RegionConflict, register
    from shared.settings import Settings

    settings = Settings()
    try:
        rows = parse_manifest(manifest.read_text(encoding="utf-8"), settings.regions())
    except ManifestError as exc:
        typer.echo(f"{manifest}: {exc}\nnothing registered", err=True)
        raise typer.Exit(1) from None
    except UnicodeDecodeError as exc:
        typer.echo(f"{manifest}: not UTF-8 text ({exc}); nothing registered", err=True)
        raise typer.Exit(1) from None

    async def run() -> int:
        pool = await connect_pool(settings.pg_dsn.get_secret_value(), max_size=1)
        try:
            async with pool.acquire() as conn:
                return await register(conn, rows)
        finally:
            await pool.close()

    try:
        changed = asyncio.run(run())
    except RegionConflict as exc:
        typer.echo(f"{manifest}: {exc}\nnothing registered", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"registered {len(rows)} record(s) from {manifest} ({changed} new or updated while pending)")


def _read_ids(ids: Path) -> list[str]:
    """The record ids in the file ``ids`` (``-``: stdin), one a line; a file that cannot be read exits 1."""
    try:
        text = sys.stdin.read() if str(ids) == "-" else ids.read_text(encoding="utf-8")
    except OSError as exc:
        die(f"--ids {ids}: cannot read it ({exc.strerror or type(exc).__name__}); nothing submitted")
    except UnicodeDecodeError as exc:
        die(f"--ids {ids}: not UTF-8 text ({exc.reason} at byte {exc.start}); nothing submitted")
    return [line.strip() for line in text.splitlines() if line.strip()]


@job_app.command("submit")
def job_submit(
    ids: Annotated[Path | None, typer.Option(help="File of record ids, one a line (- for stdin).")] = None,
    region: Annotated[str | None, typer.Option(help="Region whose files to register.")] = None,
    pattern: Annotated[str | None, typer.Option(help="Glob under the region root, e.g. '*.xml'.")] = None,
    priority: Annotated[Priority, typer.Option(help="high: the priority lane.")] = Priority.NORMAL,
    callback_url: Annotated[str | None, typer.Option(help="POSTed the job's status when it completes.")] = None,
    rules: Annotated[ValidationProfile, typer.Option(
        help="strict: every failed rule rejects; lenient: the documented catalogue and presentation rules "
             "become warnings on the archived record.")] = ValidationProfile.STRICT,
    max_retries: Annotated[int | None, typer.Option(min=0, max=100, help="Retries of a failing stage per record "
                                                    "(default: the stages' own).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the job with a progress bar until it completes; exit 3 "
                                       "at once if a stage it needs is halted.")] = False,
    url: IngestUrl = None,
    token: Token = None,
) -> None:
    """Submit a job: record ids (--ids) or a region's files matching a pattern (--region --pattern)."""
    body: dict[str, Any] = {"priority": priority.value, "validation_rules": rules.value}
    if max_retries is not None:
        body["max_retries"] = max_retries
    if (ids is None) == (region is None or pattern is None):
        raise typer.BadParameter("give --ids FILE, or --region and --pattern")
    if ids is not None:
        body["record_ids"] = _read_ids(ids)
    else:
        body["source"] = {"region": region, "pattern": pattern}
    if callback_url:
        body["callback_url"] = callback_url
    accepted = call(api("ingest", url, token, admin=True), "POST", "/api/v1/jobs", ok=(202,), json=body,
                    timeout=300)
    typer.echo(f"job {accepted['job_id']}: {accepted['record_count']} record(s)")
    if wait:
        _follow(accepted["job_id"], api("ingest", url, token))


# `job submit --wait` exit codes: 0 the job completed, 1 the API refused or failed, 3 a stage the
# job needs is halted (an operator must fix the cause and restart the stage; waiting cannot help).
EXIT_HALTED = 3


def _blocked_line(b: dict[str, Any]) -> str:
    """A halted or paused replica of a stage the job still needs, and why."""
    return f"stage {b['stage']} {b['state'].upper()} (replica {b['replica']} on {b['host']}, since {b['since']}): " \
           f"{b['reason']}"


def _follow(job_id: str, target: Api) -> None:
    import httpx
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("job {task.fields[job]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[counts]}"), TimeElapsedColumn())
    paused_seen: set[tuple[str, str, str]] = set()
    halted: list[str] = []
    stalled_said = False
    with httpx.Client(timeout=30) as client, Progress(*columns) as progress:
        task = progress.add_task("job", total=None, job=job_id[:8], counts="")
        while True:
            st = call(target, "GET", f"/api/v1/jobs/{job_id}", client=client)
            counts = " ".join(f"{k} {v}" for k, v in sorted(st["counts"].items()))
            progress.update(task, total=st["record_count"], completed=st["finished"], counts=counts)
            if st["status"] == "completed":
                break
            blocked = st.get("blocked_stages") or []
            halted = [_blocked_line(b) for b in blocked if b["state"] == "halted"]
            if halted:
                break
            # A pause ends by itself (the downstream comes back): say so once, keep waiting.
            paused = {(b["stage"], b["replica"], b["host"]): _blocked_line(b)
                      for b in blocked if b["state"] == "paused"}
            for key in paused.keys() - paused_seen:
                progress.console.print(f"[yellow]{escape(paused[key])}[/] (still waiting)",
                                       highlight=False)
            paused_seen = set(paused)
            if st.get("stalled") and not stalled_said:
                # Messages lost (e.g. a broker restart): the reconciler re-drives them, or do it now.
                progress.console.print(f"[yellow]{st['stalled']} record(s) stalled[/] (no transition for longer "
                                       f"than the re-drive lease); `fiscalflow records redrive --job {job_id}` "
                                       "sends them through again (still waiting)", highlight=False)
                stalled_said = True
            time.sleep(0.5)
    if halted:
        for line in halted:
            typer.echo(f"job {job_id}: {line}", err=True)
        typer.echo(f"job {job_id} cannot finish until an operator fixes the cause and restarts the halted stage "
                   f"(its records wait in Kafka); then follow it with `fiscalflow job show {job_id}`.", err=True)
        raise typer.Exit(EXIT_HALTED)
    typer.echo(json.dumps({"job_id": job_id, "status": st["status"], "counts": st["counts"]}))


@job_app.command("show")
def job_show(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    url: IngestUrl = None,
    token: Token = None,
) -> None:
    """A job's status, record count, counts per outcome, and the halted or paused stages it waits on."""
    st = call(api("ingest", url, token), "GET", f"/api/v1/jobs/{job_id}", timeout=30)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"job {st['job_id']}  {st['status']}  priority {st['priority']}  "
               f"{st['finished']}/{st['record_count']} finished ({st['progress']:.0%})")
    for status, n in sorted(st["counts"].items()):
        typer.echo(f"  {status:<12} {n}")
    if st.get("stalled"):
        typer.echo(f"  {st['stalled']} record(s) stalled (no transition for longer than the re-drive lease); "
                   f"`fiscalflow records redrive --job {st['job_id']}` sends them through again")
    for b in st.get("blocked_stages") or []:
        typer.echo(f"  ! {_blocked_line(b)}")


def _age_s(text: str) -> float:
    """``90s``, ``5m``, ``2h``, ``1d`` or plain seconds."""
    t = text.strip().lower()
    try:
        return float(t[:-1]) * _AGE[t[-1]] if t and t[-1] in _AGE else float(t)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an age like 90s, 5m, 2h", param_hint="--older-than") from None


@records_app.command("redrive")
def records_redrive(
    job: Annotated[str | None, typer.Option(help="Only this job's records.")] = None,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Stalled = no transition for longer than this (90s, 5m, 2h); default: the "
        "re-drive lease, FISCALFLOW_REDRIVE_LEASE_S.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List what would be re-driven; send nothing.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many records.")] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Send stalled records (not final, no transition for longer than the lease) through the pipeline
    again.  Each one is re-driven from download once (guarded by the lease, with an audit event);
    a still-live twin of its earlier pass is harmless."""
    import asyncio

    from services.ingest.reconciler import redrive
    from shared.db.migrate import connect_pool
    from shared.db.stalled import stalled_records
    from shared.runtime.kafka import AsyncProducer, producer_config
    from shared.settings import Settings

    s = Settings()
    lease = _age_s(older_than) if older_than is not None else s.redrive_lease_s
    if job is not None:
        try:
            job = str(uuid.UUID(job))
        except ValueError:
            raise typer.BadParameter(f"{job!r} is not a UUID", param_hint="--job") from None

    async def run() -> tuple[list[Any], int]:
        pool = await connect_pool(s.pg_dsn.get_secret_value(), max_size=1)
        try:
            found = await stalled_records(pool, lease, job, limit)
        finally:
            await pool.close()
        if dry_run or not found:
            return found, 0
        producer = AsyncProducer(producer_config(s, "fiscalflow-cli-redrive"))
        try:
            return found, await redrive(producer, found, "cli", lease)
        finally:
            await asyncio.to_thread(producer.close)

    found, sent = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps({"stalled": len(found), "sent": sent, "dry_run": dry_run, "lease_s": lease,
                               "records": [{"record_id": r.record_id, "status": r.status, "job_id": r.job_id,
                                            "last_transition": r.updated_at.isoformat(), "redrives": r.redrives}
                                           for r in found]}, indent=2))
        return
    by_status: dict[str, int] = {}
    for r in found:
        by_status[r.status] = by_status.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {st}" for st, n in sorted(by_status.items())) or "none"
    typer.echo(f"{len(found)} stalled record(s) (no transition for {lease:.0f} s): {summary}")
    for r in found[:20]:
        typer.echo(f"  {r.record_id}  {r.status}  since {r.updated_at.isoformat(timespec='seconds')}"
                   f"  re-driven {r.redrives}x" + (f"  job {r.job_id}" if r.job_id else ""))
    if len(found) > 20:
        typer.echo(f"  ... and {len(found) - 20} more")
    if dry_run:
        typer.echo("dry run: nothing sent")
    elif found:
        typer.echo(f"re-drive requested for {sent} record(s); the ingest stage sends each one to download again")


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("register")(register_manifest)
    app.add_typer(job_app, name="job")
    app.add_typer(records_app, name="records")
