"""``fiscalflow topology``: the pipeline's topology (shared/topics.py) as the README's table."""

from __future__ import annotations

import typer

from shared.topics import SHARED_TOPICS, TOPOLOGY, Lane, StageTopology


def _code(items: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "—"


def _results(t: StageTopology) -> str:
    if t.next is None:
        return "—"
    nxt = TOPOLOGY[t.next]
    return f"{t.next}: `{nxt.topic(Lane.NORMAL)}` (priority records: `{nxt.topic(Lane.PRIORITY)}`)"


def topology_table() -> str:
    lines = ["| stage | consumes (group: topics) | results to | dead letters | a message waits on | "
             "the stage pauses on |", "|---|---|---|---|---|---|"]
    for t in TOPOLOGY.values():
        consumes = "<br>".join(f"`{group}`: {_code(topics)}" for group, topics in t.subscriptions().items())
        lines.append(f"| {t.stage} | {consumes} | {_results(t)} | {_code([t.dead_letters] if t.dead_letters else [])}"
                     f" | {_code([f'{p}*' for p in t.per_message_downstreams])} | {_code(t.stage_wide_downstreams)} |")
    lines += ["", "A stage's input topic has `FISCALFLOW_PARTITIONS_<STAGE>` partitions, its `.priority` and `.retry` "
              f"topics `FISCALFLOW_PARTITIONS_SIDE_LANES` at most; {_code(SHARED_TOPICS)} "
              "have `FISCALFLOW_PARTITIONS_SHARED`."]
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    @app.command("topology")
    def topology() -> None:
        """Print each stage's topics, consumer groups, next stage and breakers (the README's table)."""
        typer.echo(topology_table())
