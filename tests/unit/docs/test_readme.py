"""The README is what a newcomer reads first: its settings table must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from shared.cli.config import settings_table

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_settings_table_matches_the_settings_class() -> None:
    text = README.read_text()
    m = re.search(r"<!-- settings-table -->\n(.*?)\n<!-- /settings-table -->", text, re.S)
    assert m, "README lost its settings table markers"
    assert m.group(1) == settings_table(), "README's settings table is stale: paste `fiscalflow config --markdown`"


def test_readme_gives_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
