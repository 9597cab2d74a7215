"""``fiscalflow dlq``: list, show, count and replay dead letters.

Every sub-command reads the dead-letter topic from its beginning to its current end, without a
consumer group (nothing is committed), and takes the same filters.  A dead letter written more
than once (a stage killed before committing its input redoes it) is one dead letter everywhere:
listed, counted and replayed once, its copies' positions shown with it (model.letter_id).
Exit status: 0 done, 1 something failed (a replay the broker did not take, an unreachable
broker), 2 usage errors.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shared.topics import Stage

if TYPE_CHECKING:
    from shared.dlq.filters import DeadLetterFilter
    from shared.dlq.model import DeadLetter
    from shared.dlq.replay import PlannedReplay, ReplayOptions, ReplaySummary
    from shared.settings import Settings

app = typer.Typer(no_args_is_help=True, help="List, show, count and replay dead letters (fiscal.dlq).")

StageOpt = Annotated[list[Stage] | None, typer.Option("--stage", help="Failed in this stage. Repeatable.")]
ReasonOpt = Annotated[list[str] | None, typer.Option("--reason", help="Reason code (e.g. CHECKSUM_MISMATCH). "
                                                                        "Repeatable.")]
JobOpt = Annotated[list[str] | None, typer.Option("--job", help="Belongs to this job id. Repeatable.")]
RecordOpt = Annotated[list[str] | None, typer.Option("--record", help="Record id. Repeatable.")]
RecordsFileOpt = Annotated[Path | None, typer.Option("--records-file", help="File of record ids, one a line.",
                                                     exists=True, dir_okay=False)]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Failed at or after: ISO time (UTC if no zone) or "
                                                              "an age like 30m, 2h, 7d.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Failed at or before (same forms as --since).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many dead letters.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", help="Topic prefix of an isolated pipeline "
                                                               "(StageSpec.topic_namespace; tests). Default: none.")]


def _filter(stage: list[Stage] | None, reason: list[str] | None, job: list[str] | None, record: list[str] | None,
            records_file: Path | None, since: str | None, until: str | None, limit: int | None) -> DeadLetterFilter:
    from shared.dlq.filters import DeadLetterFilter, parse_time, read_record_ids

    records = set(record or ())
    if records_file is not None:
        records |= read_record_ids(records_file)
        if not records:
            typer.echo(f"error: no record ids in {records_file}", err=True)
            raise typer.Exit(2)
    try:
        t_since = parse_time(since) if since else None
        t_until = parse_time(until) if until else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return DeadLetterFilter(stages=frozenset(s.value for s in stage or ()), reasons=frozenset(reason or ()),
                            jobs=frozenset(job or ()), records=frozenset(records), since=t_since, until=t_until,
                            limit=limit)


def _settings() -> Settings:
    from shared.settings import get_settings

    return get_settings()


def _read(namespace: str, keep_values: bool) -> list[DeadLetter]:
    """All dead letters, each once, in failure order (the broker's timestamp, then position)."""
    from shared.dlq.reader import DeadLetterTopicMissing
    from shared.dlq.run import read_letters

    try:
        return read_letters(_settings(), namespace, keep_values)
    except DeadLetterTopicMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def _echo_json(obj: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(obj, default=str).decode())


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""


@app.command("list")
def list_(stage: StageOpt = None, reason: ReasonOpt = None, job: JobOpt = None, record: RecordOpt = None,
          records_file: RecordsFileOpt = None, since: SinceOpt = None, until: UntilOpt = None,
          limit: LimitOpt = None, json: JsonOpt = False, namespace: NamespaceOpt = "") -> None:
    """List dead letters, oldest first."""
    flt = _filter(stage, reason, job, record, records_file, since, until, limit)
    letters = flt.select(_read(namespace, keep_values=False))
    if json:
        for dl in letters:
            _echo_json(dl.model_dump(mode="json"))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(letters)} dead letters", title_justify="left")
    for col in ("position", "record", "stage", "reason", "attempts", "replays", "failed at (UTC)", "job", "error",
                "copies"):
        table.add_column(col, overflow="fold")
    for dl in letters:
        table.add_row(dl.position, dl.record_id, dl.stage, dl.reason, str(dl.attempts), str(dl.replay_count),
                      _when(dl.failed_at), dl.job_id or "", dl.error[:80], " ".join(dl.copies))
    Console().print(table)


@app.command("show")
def show(target: Annotated[str, typer.Argument(help="A record id, or PARTITION:OFFSET of one dead letter.")],
         stage: StageOpt = None, reason: ReasonOpt = None, job: JobOpt = None, record: RecordOpt = None,
         records_file: RecordsFileOpt = None, since: SinceOpt = None, until: UntilOpt = None,
         limit: LimitOpt = None, json: JsonOpt = False, namespace: NamespaceOpt = "",
         preview_bytes: Annotated[int, typer.Option("--preview-bytes", min=0, help="Bytes of the value shown.")] = 600,
         ) -> None:
    """Show dead letters of a record (all of them, oldest first) or one by position: every header,
    the details, and the start of the message."""
    flt = _filter(stage, reason, job, record, records_file, since, until, limit)
    m = re.fullmatch(r"(\d+):(\d+)", target)
    # A copy's position shows the dead letter it is a copy of.
    letters = [dl for dl in flt.select(_read(namespace, keep_values=True))
               if (m and f"{int(m.group(1))}:{int(m.group(2))}" in (dl.position, *dl.copies))
               or (not m and dl.record_id == target)]
    if not letters:
        typer.echo(f"no dead letter matches {target}", err=True)
        raise typer.Exit(1)
    for dl in letters:
        preview = dl.value[:preview_bytes].decode("utf-8", "replace")
        if json:
            _echo_json({**dl.model_dump(mode="json"), "value_preview": preview})
        else:
            _print_letter(dl, preview)


def _print_letter(dl: DeadLetter, preview: str) -> None:
    import orjson
    from rich.console import Console, Group
    from rich.json import JSON
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    for name, value in (
        ("record", dl.record_id), ("dead letter", f"{dl.dlq_topic} {dl.position}"),
        ("origin", f"{dl.origin_topic} {dl.origin_partition}:{dl.origin_offset}"), ("stage", dl.stage),
        ("reason", dl.reason), ("error", dl.error), ("attempts", str(dl.attempts)),
        ("first failure", _when(dl.first_failure)), ("last failure", _when(dl.last_failure)),
        ("replays", str(dl.replay_count)), ("job", dl.job_id or ""), ("trace", dl.trace_id),
        ("value", f"{dl.value_size} bytes"), ("copies", " ".join(dl.copies) or "none"),
    ):
        facts.add_row(name, value)
    headers = Table("header", "value", title="headers", title_justify="left")
    for k, v in sorted(dl.headers.items()):
        headers.add_row(k, v if len(v) <= 200 else v[:200] + "…")
    parts: list[Any] = [facts, headers]
    if dl.details is not None:
        parts += [Text("details", style="bold"), JSON(orjson.dumps(dl.details, default=str).decode())]
    more = "…" if dl.value_size > len(preview.encode()) else ""
    parts += [Text("value", style="bold"), Text(preview + more)]
    Console().print(Panel(Group(*parts), title=f"{dl.record_id} @ {dl.position}", title_align="left"))


@app.command("stats")
def stats(stage: StageOpt = None, reason: ReasonOpt = None, job: JobOpt = None, record: RecordOpt = None,
          records_file: RecordsFileOpt = None, since: SinceOpt = None, until: UntilOpt = None,
          limit: LimitOpt = None, json: JsonOpt = False, namespace: NamespaceOpt = "") -> None:
    """Count dead letters by stage and reason (a redelivered copy counts once; ``copies`` says
    how many were folded in)."""
    flt = _filter(stage, reason, job, record, records_file, since, until, limit)
    letters = flt.select(_read(namespace, keep_values=False))
    groups: dict[tuple[str, str], list[DeadLetter]] = defaultdict(list)
    for dl in letters:
        groups[(dl.stage, dl.reason)].append(dl)
    rows = [{"stage": s, "reason": r, "count": len(g), "records": len({d.record_id for d in g}),
             "oldest": min(d.failed_at for d in g).isoformat(), "newest": max(d.failed_at for d in g).isoformat()}
            for (s, r), g in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    total = {"count": len(letters), "records": len({d.record_id for d in letters}),
             "copies": sum(len(d.copies) for d in letters)}
    if json:
        _echo_json({"total": total, "groups": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("stage", "reason", "dead letters", "records", "oldest (UTC)", "newest (UTC)",
                  title=f"{total['count']} dead letters of {total['records']} records"
                  + (f" ({total['copies']} redelivered copies not counted)" if total["copies"] else ""),
                  title_justify="left")
    for r in rows:
        table.add_row(str(r["stage"]), str(r["reason"]), str(r["count"]), str(r["records"]),
                      str(r["oldest"])[:19], str(r["newest"])[:19])
    Console().print(table)


@app.command("replay")
def replay(stage: StageOpt = None, reason: ReasonOpt = None, job: JobOpt = None, record: RecordOpt = None,
           records_file: RecordsFileOpt = None, since: SinceOpt = None, until: UntilOpt = None,
           limit: LimitOpt = None, json: JsonOpt = False, namespace: NamespaceOpt = "",
           to: Annotated[Stage | None, typer.Option("--to", help="Send to this stage's input instead of the "
                                                                  "stage each dead letter came from.")] = None,
           max_replays: Annotated[int, typer.Option("--max-replays", min=0, help="A record replayed this often "
                                                    "already goes to fiscal.parking instead.")] = 3,
           rate: Annotated[float | None, typer.Option("--rate", min=0.01, help="At most N messages per second.")]
           = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be sent; send nothing.")]
           = False,
           all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter (needed without a filter).")]
           = False,
           ) -> None:
    """Send dead letters back into the pipeline (each record's latest one, once)."""
    flt = _filter(stage, reason, job, record, records_file, since, until, limit)
    if not all_ and not (stage or reason or job or flt.records or since or until):
        typer.echo("error: no filter given: pass --all to replay the whole dead-letter topic", err=True)
        raise typer.Exit(2)
    import asyncio

    from shared.dlq.replay import Outcome, ReplayOptions, latest_per_record

    opts = ReplayOptions(to_stage=to, max_replays=max_replays, rate=rate, dry_run=dry_run, namespace=namespace)
    letters, superseded = latest_per_record(_read(namespace, keep_values=True), flt)
    summary = asyncio.run(_replay(letters, superseded, opts, json))
    _report(summary, json)
    if summary.outcomes[Outcome.FAILED]:
        raise typer.Exit(1)


async def _replay(letters: list[DeadLetter], superseded: list[DeadLetter], opts: ReplayOptions,
                  quiet: bool) -> ReplaySummary:
    import asyncpg
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from shared.db.migrate import migrate
    from shared.dlq.run import replay_letters

    settings = _settings()
    actor = f"dlq-replay/{getpass.getuser()}@{socket.gethostname()}"
    conn = await asyncpg.connect(settings.pg_dsn.get_secret_value())
    try:
        await migrate(conn)
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), disable=quiet or opts.dry_run)
        with progress:
            task = progress.add_task("replaying", total=None)
            return await replay_letters(conn, settings, letters, superseded, opts, actor,
                                        on_plan=lambda items: progress.update(task, total=len(items)),
                                        on_item=lambda _: progress.advance(task))
    finally:
        await conn.close()


def _report(summary: ReplaySummary, as_json: bool) -> None:
    if as_json:
        for item in summary.items:
            _echo_json(item.to_json_dict())
        _echo_json({"summary": summary.to_json_dict()})
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if summary.dry_run:
        table = Table("position", "record", "failed in", "reason", "would be", "to", "replay count",
                      title="dry run: nothing sent", title_justify="left")
        for i in summary.items:
            table.add_row(i.letter.position, i.letter.record_id, i.letter.stage, i.letter.reason,
                          _outcome_text(i), i.target_topic, str(i.replay_count) if i.target_topic else "")
        console.print(table)
    counts = Table("outcome", "dead letters", title=("would be: " if summary.dry_run else "") +
                   f"{len(summary.items)} dead letters in {summary.elapsed_s:.1f} s", title_justify="left")
    for outcome, n in summary.outcomes.items():
        if n:
            counts.add_row(outcome.value.replace("_", " "), str(n))
    console.print(counts)


def _outcome_text(item: PlannedReplay) -> str:
    return item.outcome.value.replace("_", " ")
