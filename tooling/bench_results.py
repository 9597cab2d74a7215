"""The raw run log: every benchmark, chaos and demo run appends to it, and nothing else writes it.

Two files under ``<local dir>/bench/`` (``FISCALFLOW_LOCAL_DIR``, default ``./.local``), out of git, so
the README's commands, the tests, the demo and the benchmarks never change a tracked file:

- ``RESULTS.md``: the run's full tables, dated, with machine, commit, command and notes, for a human;
- ``runs.jsonl``: one JSON line per scenario the run measured (a ``RunRecord``: scenario id, date,
  machine, commit, command, parameters, the figures as numbers, a one-line summary), from which
  ``fiscalflow bench readme`` regenerates the table of bench/README.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

Figures = Mapping[str, float | None]


def local_bench_dir() -> Path:
    local = os.environ.get("FISCALFLOW_LOCAL_DIR") or str(REPO / ".local")
    return Path(local) / "bench"


def results_path() -> Path:
    return local_bench_dir() / "RESULTS.md"


def runs_path() -> Path:
    return local_bench_dir() / "runs.jsonl"


def machine() -> str:
    cores = os.cpu_count() or 0
    mem_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cores} cores ({cpu}), {mem_gb:.0f} GiB; {interpreter()}"


def interpreter() -> str:
    """The Python the run's processes ran on (the harness and the stages share the venv): its build
    moves every Python figure, and the reference time with them (decision 0038)."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return f"Python {platform.python_version()} ({base})"


# A fixed piece of work a stage does per document, in small: compress, hash, encode and decode JSON,
# walk a dict. Its time says how fast this machine's core was when the run was recorded.
_REFERENCE_DOC = b"".join(b'<cfdi:Concepto ClaveProdServ="%08d" Cantidad="%d" Importe="%d.00"/>' % (i * 7919, i, i * 13)
                          for i in range(80))


def _reference_once() -> None:
    for i in range(400):
        body = zlib.compress(_REFERENCE_DOC + str(i).encode(), 6)
        digest = hashlib.sha256(body).hexdigest()
        fields = {f"k{j}": (j, digest[j % 60:], body[:8].hex()) for j in range(60)}
        decoded = json.loads(json.dumps(fields))
        sum(len(v[1]) for v in decoded.values())


def reference_ms(repeats: int = 7) -> float:
    """The machine's speed: milliseconds one core takes for a fixed workload (the fastest of
    ``repeats`` tries, so a moment of interference does not count; lower is faster).

    Recorded with every measurement: these VMs are not all equally fast, and the same one is not on
    every day (the same commit took 215 s one day and 176 s the next), so two figures compare only
    together with their reference times."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        _reference_once()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 2)


def git_state() -> tuple[str, bool]:
    """The short commit and whether tracked files differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=REPO, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, check=False).stdout.strip()
        return out.stdout.strip() or "unknown", bool(dirty)
    except OSError:
        return "unknown", False


def commit() -> str:
    sha, dirty = git_state()
    return sha + (" (+ uncommitted changes)" if dirty else "")


@dataclass(frozen=True)
class Measurement:
    """What a run measured for one scenario: the part of its raw record the run supplies.

    ``params`` are the run's size and configuration (``count``, ``replicas``, ...): a scenario's row
    in bench/README.md takes only runs made with its own parameters.  ``error``: the run failed."""

    scenario: str
    figures: Figures
    summary: str
    params: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One line of runs.jsonl."""

    scenario: str
    date: dt.datetime  # UTC
    machine: str
    commit: str
    dirty: bool
    command: str
    params: dict[str, Any]
    figures: dict[str, float | None]
    summary: str
    error: str = ""
    load: tuple[float, ...] = ()  # load average (1, 5, 15 min) when the run ended
    reference_ms: float | None = None  # the machine's speed when recorded (``reference_ms()``); older runs: None

    def to_json(self) -> str:
        return json.dumps({
            "scenario": self.scenario, "date": self.date.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": self.machine, "commit": self.commit, "dirty": self.dirty, "command": self.command,
            "params": self.params, "figures": self.figures, "summary": self.summary, "error": self.error,
            "load": list(self.load), "reference_ms": self.reference_ms}, ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> RunRecord:
        """Parse one line; ValueError when it is not a record."""
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            date = dt.datetime.fromisoformat(str(raw["date"]).replace("Z", "+00:00"))
            if date.tzinfo is None:
                date = date.replace(tzinfo=dt.UTC)
            figures = raw.get("figures") or {}
            params = raw.get("params") or {}
            if not isinstance(figures, dict) or not isinstance(params, dict):
                raise ValueError("figures and params must be objects")
            return cls(scenario=str(raw["scenario"]), date=date.astimezone(dt.UTC), machine=str(raw.get("machine", "")),
                       commit=str(raw.get("commit", "")), dirty=bool(raw.get("dirty", False)),
                       command=str(raw.get("command", "")), params=params,
                       figures={str(k): _number(v) for k, v in figures.items()}, summary=str(raw.get("summary", "")),
                       error=str(raw.get("error") or ""), load=tuple(float(x) for x in raw.get("load") or ()),
                       reference_ms=_number(raw.get("reference_ms")))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a run record: {exc!r}") from exc


def _number(value: object) -> float | None:
    """A figure as JSON can hold it: a finite number, or null (a timeout's infinity, a NaN)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None  # six digits: measurements, not more
    raise ValueError(f"figure is not a number: {value!r}")


def parse_records(lines: Iterable[str]) -> tuple[list[RunRecord], list[str]]:
    """The records of runs.jsonl in file order, and a note per line that is not one (skipped)."""
    records, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(RunRecord.from_json(line))
        except ValueError as exc:
            problems.append(f"line {n}: {exc}")
    return records, problems


def read_records(path: Path | None = None) -> tuple[list[RunRecord], list[str]]:
    path = path or runs_path()
    if not path.exists():
        return [], []
    with path.open(encoding="utf-8") as fh:
        return parse_records(fh)


def append_result(scenario: str, command: str, table: str, note: str = "",
                  measured: Sequence[Measurement] = ()) -> Path:
    """Append the entry to RESULTS.md and one record per measurement to runs.jsonl; returns RESULTS.md."""
    results = results_path()
    results.parent.mkdir(parents=True, exist_ok=True)
    if not results.exists():
        results.write_text("# Benchmark runs\n\nEvery benchmark, chaos and demo run, appended by the run itself.\n")
    now = dt.datetime.now(dt.UTC)
    sha, dirty = git_state()
    where = machine()
    speed = reference_ms()
    entry = [f"\n## {now.strftime('%Y-%m-%d %H:%M UTC')} — {scenario}\n", f"- machine: {where}",
             f"- machine speed: reference workload {speed:.1f} ms on one core (lower is faster)",
             f"- commit: {sha}" + (" (+ uncommitted changes)" if dirty else ""), f"- command: `{command}`"]
    if note:
        entry.append(f"- note: {note}")
    entry += ["", table, ""]
    with results.open("a") as fh:
        fh.write("\n".join(entry))
    if measured:
        try:
            load: tuple[float, ...] = os.getloadavg()
        except OSError:
            load = ()
        lines = [RunRecord(scenario=m.scenario, date=now.replace(microsecond=0), machine=where, commit=sha,
                           dirty=dirty, command=command, params=dict(m.params),
                           figures={k: _number(v) for k, v in m.figures.items()}, summary=m.summary,
                           error=m.error, load=tuple(round(x, 2) for x in load), reference_ms=speed).to_json()
                 for m in measured]
        with runs_path().open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
    return results
