"""Amounts as a person reads them: rounded to the currency's decimals (the APIs' JSON keeps them exact)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 minor units (SAT's c_Moneda agrees) of the currencies that do not have 2; XXX: no currency.
DECIMALS = {"XXX": 0, "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "PYG": 0, "VND": 0, "UGX": 0, "XAF": 0,
            "XOF": 0, "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3, "CLF": 4}
DEFAULT_DECIMALS = 2


def money(amount: str | int | float | Decimal | None, currency: str = "MXN") -> str:
    """``amount`` (a decimal string such as ``"19553930.07320313"``) to ``currency``'s decimals, half up;
    what is not a number is shown as it came, nothing as an empty cell."""
    if amount is None or amount == "":
        return ""
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    if not value.is_finite():
        return str(amount)
    places = DECIMALS.get(currency.strip().upper(), DEFAULT_DECIMALS)
    return str(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
