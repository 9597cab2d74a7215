"""The README is what a newcomer reads first: its generated tables must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from shared.cli.config import settings_table
from shared.cli.topology import topology_table

README = Path(__file__).resolve().parents[3] / "README.md"


def _between(marker: str) -> str:
    m = re.search(rf"<!-- {marker} -->\n(.*?)\n<!-- /{marker} -->", README.read_text(), re.S)
    assert m, f"README lost its {marker} markers"
    return m.group(1)


def test_readme_settings_table_matches_the_settings_class() -> None:
    assert _between("settings-table") == settings_table(), \
        "README's settings table is stale: paste `fiscalflow config --markdown`"


def test_the_product_reads_its_configuration_only_through_settings() -> None:
    """So the settings table is every knob: no module of the product reads the environment itself."""
    root = README.parent
    sources = [p for top in ("shared", "services") for p in sorted((root / top).rglob("*.py"))]
    readers = [f"{p.relative_to(root)}:{n}" for p in sources if p != root / "shared" / "settings.py"
               for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bos\.(environ|getenv)\b", line)]
    assert not readers, f"environment read outside shared/settings.py (make it a Settings field): {readers}"


def test_readme_topology_table_matches_the_topology() -> None:
    assert _between("topology-table") == topology_table(), \
        "README's topology table is stale: paste `fiscalflow topology`"


def test_readme_gives_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
