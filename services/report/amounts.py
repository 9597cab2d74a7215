"""Amounts on the wire: exact decimal strings, at least two decimals, no exponent."""

from __future__ import annotations

from decimal import Decimal

_CENTS = Decimal("0.01")


def money(value: Decimal | int | None) -> str:
    d = Decimal(value or 0).normalize()
    if d.as_tuple().exponent > -2:  # type: ignore[operator]
        d = d.quantize(_CENTS)
    return format(d, "f")
