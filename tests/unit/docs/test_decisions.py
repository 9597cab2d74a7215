"""Measured claims cite a decision record (docs/decisions/NNNN-*.md, with its numbers), not a
timestamp in a run log: every cited decision exists, and the removed tracked log is cited nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DECISIONS = ROOT / "docs" / "decisions"
CITE = re.compile(r"decisions?[ /](\d{4})\b")
OLD_LOG = "bench/" + "RESULTS.md"  # the run log that was tracked; the raw one lives in .local/bench/


def sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in ("shared", "services", "tooling", "tests", "bench", "docs", "deploy", "helm"):
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in {".py", ".md", ".yaml", ".yml", ".toml"}]
    return files


def test_every_cited_decision_exists_and_no_one_cites_the_old_run_log() -> None:
    numbers = {p.name[:4] for p in DECISIONS.glob("[0-9][0-9][0-9][0-9]-*.md")}
    missing, old = [], []
    for path in sources():
        text = path.read_text(encoding="utf-8", errors="replace")
        missing += [f"{path.relative_to(ROOT)}: {n}" for n in CITE.findall(text) if n not in numbers]
        if OLD_LOG in text.replace(".local/" + OLD_LOG, ""):
            old.append(str(path.relative_to(ROOT)))
    assert not missing, missing
    assert not old, old
