"""Append a dated benchmark entry to bench/RESULTS.md: date, machine, commit, command, numbers."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "RESULTS.md"


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
                             cwd=RESULTS.parent.parent, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=RESULTS.parent.parent, check=False).stdout.strip()
        return out.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def append_result(scenario: str, command: str, table: str, note: str = "") -> None:
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEvery benchmark run, appended by the benchmark itself.\n")
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry = [f"\n## {now} — {scenario}\n", f"- machine: {machine()}", f"- commit: {commit()}",
             f"- command: `{command}`"]
    if note:
        entry.append(f"- note: {note}")
    entry += ["", table, ""]
    with RESULTS.open("a") as fh:
        fh.write("\n".join(entry))
