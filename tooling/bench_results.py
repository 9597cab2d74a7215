"""Append a dated benchmark entry (date, machine, commit, command, numbers) to the raw run log.

The raw log is ``<local dir>/bench/RESULTS.md`` (``FISCALFLOW_LOCAL_DIR``, default ``./.local``):
out of git, so the README's commands, the tests, the demo and the benchmarks never change a
tracked file.  bench/RESULTS.md is the history recorded before that, kept as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def results_path() -> Path:
    local = os.environ.get("FISCALFLOW_LOCAL_DIR") or str(REPO / ".local")
    return Path(local) / "bench" / "RESULTS.md"


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
    return f"{cores} cores ({cpu}), {mem_gb:.0f} GiB"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=REPO, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO, check=False).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def append_result(scenario: str, command: str, table: str, note: str = "") -> Path:
    """Append the entry; returns the log's path."""
    results = results_path()
    results.parent.mkdir(parents=True, exist_ok=True)
    if not results.exists():
        results.write_text("# Benchmark runs\n\nEvery benchmark, chaos and demo run, appended by the run itself.\n")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry = [f"\n## {now} — {scenario}\n", f"- machine: {machine()}", f"- commit: {commit()}",
             f"- command: `{command}`"]
    if note:
        entry.append(f"- note: {note}")
    entry += ["", table, ""]
    with results.open("a") as fh:
        fh.write("\n".join(entry))
    return results
