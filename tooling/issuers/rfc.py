"""RFC and CURP values that pass SAT's patterns and carry a real date.

The mod-11 check digit is not computed on purpose: SAT-registered RFCs exist that fail it, so the
validator must not enforce it, and the demo data does not pretend to either.
"""

from __future__ import annotations

import random
import re
from datetime import date, timedelta

RFC_PATTERN = re.compile(r"[A-Z&Ñ]{3,4}[0-9]{2}(0[1-9]|1[012])(0[1-9]|[12][0-9]|3[01])[A-Z0-9]{2}[0-9A]")
GENERIC_RFCS = frozenset({"XAXX010101000", "XEXX010101000"})

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HOMOCLAVE = "ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"
_STATES = ("AS", "BC", "CH", "CL", "DF", "GT", "JC", "MC", "MN", "NL", "OC", "PL", "QT", "SL", "SR", "VZ", "YN")
_CONSONANTS = "BCDFGHJKLMNPQRSTVWXZ"


def _company_letters(name: str) -> str:
    """Initials of the words; a short name is completed with the first word's next letters."""
    words = name.split()
    letters = "".join(word[0] for word in words)
    return (letters + words[0][1:] + "XXX")[:3]


def _person_letters(name: str) -> str:
    """SAT's rule for individuals: paternal surname's first letter and first inner vowel,
    maternal surname's initial, given name's initial (``name`` is "GIVEN PATERNAL MATERNAL")."""
    given, paternal, maternal = name.split()[:3]
    vowel = next((c for c in paternal[1:] if c in "AEIOU"), "X")
    return f"{paternal[0]}{vowel}{maternal[0]}{given[0]}"


def _inner_consonant(word: str) -> str:
    return next((c for c in word[1:] if c in _CONSONANTS), "X")


def _random_day(rng: random.Random, first: date, last: date) -> date:
    return first + timedelta(days=rng.randrange((last - first).days + 1))


def _homoclave(rng: random.Random) -> str:
    return rng.choice(_HOMOCLAVE) + rng.choice(_HOMOCLAVE) + rng.choice("0123456789A")


def rfc_moral(rng: random.Random, name: str) -> str:
    """12 characters: 3 letters of the company name, incorporation date, homoclave."""
    day = _random_day(rng, date(1960, 1, 1), date(2020, 12, 31))
    return f"{_company_letters(name)}{day:%y%m%d}{_homoclave(rng)}"


def rfc_fisica(rng: random.Random, name: str, birth: date) -> str:
    """13 characters: 4 letters of the person's name, birth date, homoclave."""
    return f"{_person_letters(name)}{birth:%y%m%d}{_homoclave(rng)}"


def birth_date(rng: random.Random) -> date:
    return _random_day(rng, date(1950, 1, 1), date(2002, 12, 31))


def curp(rng: random.Random, name: str, birth: date) -> str:
    """18 characters: letters, birth date, sex, state, inner consonants, century and check digit."""
    given, paternal, maternal = name.split()[:3]
    middle = _inner_consonant(paternal) + _inner_consonant(maternal) + _inner_consonant(given)
    century = rng.choice("0123456789") if birth.year < 2000 else rng.choice(_LETTERS)
    sex, state = rng.choice("HM"), rng.choice(_STATES)
    return f"{_person_letters(name)}{birth:%y%m%d}{sex}{state}{middle}{century}{rng.randrange(10)}"


def is_valid_rfc(rfc: str) -> bool:
    """Pattern and a real calendar date (the XSD pattern lets Feb 30 through)."""
    if rfc in GENERIC_RFCS:
        return True
    if not RFC_PATTERN.fullmatch(rfc):
        return False
    digits = rfc[-9:-3]
    try:
        # Two-digit years: either century is a real date for every valid MMDD except Feb 29.
        date(2000 + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
    except ValueError:
        try:
            date(1900 + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
        except ValueError:
            return False
    return True
