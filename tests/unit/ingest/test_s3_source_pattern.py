"""How a source: s3 pattern picks objects: the listing prefix and the per-segment match."""

from __future__ import annotations

from services.ingest.s3_source import listing_prefix, matches


def test_the_listing_prefix_is_the_literal_start_of_the_pattern() -> None:
    assert listing_prefix("inbox/2025-06-01/*.xml") == "inbox/2025-06-01/"
    assert listing_prefix("inbox/day-?/a.xml") == "inbox/day-"
    assert listing_prefix("*.xml") == ""
    assert listing_prefix("inbox/a.xml") == "inbox/a.xml"


def test_a_wildcard_never_crosses_a_slash() -> None:
    assert matches("inbox/*.xml", "inbox/a.xml")
    assert not matches("inbox/*.xml", "inbox/deeper/a.xml")
    assert matches("inbox/*/*.xml", "inbox/deeper/a.xml")
    assert not matches("inbox/*.xml", "inboxes/a.xml")
    assert matches("inbox/[ab].xml", "inbox/b.xml") and not matches("inbox/[ab].xml", "inbox/c.xml")
