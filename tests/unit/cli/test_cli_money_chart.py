"""Amounts rounded for people, and the bars of the terminal charts."""

from __future__ import annotations

import pytest

from shared.cli.chart import bar
from shared.cli.money import money


@pytest.mark.parametrize(("amount", "currency", "shown"), [
    ("19553930.07320313", "MXN", "19553930.07"),
    ("2.005", "MXN", "2.01"),  # half up, not to even
    ("-2.005", "MXN", "-2.01"),
    ("0.125", "usd", "0.13"),
    ("10.5", "XXX", "11"),
    ("1.0005", "KWD", "1.001"),
    ("7", "EUR", "7.00"),
    ("1E+3", "MXN", "1000.00"),
    (None, "MXN", ""),
    ("", "MXN", ""),
    ("n/a", "MXN", "n/a"),
    ("NaN", "MXN", "NaN"),
])
def test_money(amount: str | None, currency: str, shown: str) -> None:
    assert money(amount, currency) == shown


def test_bar() -> None:
    assert bar(10, 10, 8) == "█" * 8
    assert bar(5, 10, 8) == "█" * 4
    assert bar(1, 16, 2) == "▏"  # an eighth of a character
    assert bar(3, 16, 2) == "▍"
    assert bar(0.001, 10, 8) == "▏"  # anything above zero shows
    assert bar(0, 10, 8) == "" and bar(3, 0, 8) == ""
    assert bar(20, 10, 8) == "█" * 8  # never wider than the width
