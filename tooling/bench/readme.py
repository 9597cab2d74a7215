"""bench/README.md's table, regenerated from the raw run records (``fiscalflow bench readme``).

The table sits between ``<!-- bench-table -->`` markers.  Each declared scenario
(``tooling.bench.scenarios``) gets its row from its newest record that it accepts (a successful run
with the scenario's parameters); a scenario with no such record keeps its row as written, so the
table survives a wiped ``.local/`` and rows curated by hand stay until a run replaces them.  Rows of
no declared scenario are kept, after the declared ones.  Pure: the command reads and writes files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from tooling.bench.scenarios import SCENARIOS, Scenario
from tooling.bench_results import RunRecord

START = "<!-- bench-table -->"
END = "<!-- /bench-table -->"
HEADER = ("| scenario | current figure | target | status | commit, date | command |\n"
          "|---|---|---|---|---|---|")
_PIPE = re.compile(r"(?<!\\)\|")


def cells(line: str) -> list[str]:
    """A markdown table line's cells (an escaped ``\\|`` stays inside its cell)."""
    return [c.strip() for c in _PIPE.split(line.strip())[1:-1]]


def _escape(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def newest_per_scenario(records: Iterable[RunRecord],
                        scenarios: Sequence[Scenario] = SCENARIOS) -> dict[str, RunRecord]:
    """Each scenario's newest accepted record; on equal dates the later line of the log."""
    newest: dict[str, RunRecord] = {}
    for record in records:
        for s in scenarios:
            if s.accepts(record) and (s.id not in newest or record.date >= newest[s.id].date):
                newest[s.id] = record
    return newest


def render_row(s: Scenario, record: RunRecord) -> str:
    commit = record.commit + (" + uncommitted changes" if record.dirty else "")
    speed = "" if record.reference_ms is None else f", reference {record.reference_ms:.1f} ms"
    summary = record.summary or s.describe(record.figures)
    return (f"| {_escape(s.label)} | {_escape(summary)} | {_escape(s.target)} | {s.status(record.figures)} "
            f"| {commit}, {record.date:%Y-%m-%d}{speed} | {s.command} |")


def render_table(current: str, records: Iterable[RunRecord], scenarios: Sequence[Scenario] = SCENARIOS) -> str:
    """The table to put between the markers, given the table there now."""
    kept: dict[str, str] = {}
    for line in current.strip().splitlines()[2:]:  # below the header and its separator
        if line.strip():
            kept.setdefault(cells(line)[0] if cells(line) else line, line)
    newest = newest_per_scenario(records, scenarios)
    rows = []
    for s in scenarios:
        if s.id in newest:
            rows.append(render_row(s, newest[s.id]))
        elif s.label in kept:
            rows.append(kept[s.label])
    declared = {s.label for s in scenarios}
    rows += [line for label, line in kept.items() if label not in declared]
    return "\n".join([HEADER, *rows])


def regenerate(text: str, records: Iterable[RunRecord], scenarios: Sequence[Scenario] = SCENARIOS) -> str:
    """The README with its table regenerated; ValueError when the markers are missing."""
    m = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    if not m:
        raise ValueError(f"no {START} … {END} block")
    return text[: m.start(1)] + render_table(m.group(1), records, scenarios) + text[m.end(1):]
