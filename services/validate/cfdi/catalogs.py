"""SAT's big catalogues (the enumerations the fast schema takes out of the XSDs), checked in Python."""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby

_XML_BLANKS = re.compile(r"[ \t\n\r]+")


class CompactValues:
    """A set of catalogue values that keeps the numeric codes as sorted integers, by width.

    SAT's big catalogues are mostly fixed-width digit strings (c_CodigoPostal, c_ClaveProdServ,
    ...): 250,000 values take ~25 MB as Python strings in sets and ~2 MB as 8-byte integers,
    which is the difference between the validate stage fitting its memory budget or not.
    Membership stays exact: a code matches only with its own width (leading zeros count).
    """

    __slots__ = ("_by_width", "_other")

    def __init__(self, values: Iterable[str]) -> None:
        values = list(values)
        lengths = list(map(len, values))
        joined = "".join(values)
        if values and joined.isascii() and joined.isdigit() and 1 <= min(lengths) and max(lengths) <= 18:
            codes, other = values, set()  # the usual catalogue: digits only, checked in one C-level pass
        else:
            codes = [v for v in values if v.isascii() and v.isdigit() and len(v) <= 18]
            other = set(values).difference(codes)
        # grouped by width with C-level passes (sort, map(int)), not a Python loop per value: this
        # is most of the schema's preparation time (250,000 values)
        self._by_width = {width: array("q", sorted(set(map(int, group))))
                          for width, group in groupby(sorted(codes, key=len), key=len)}
        self._other = frozenset(other)

    def __contains__(self, raw: object) -> bool:
        if not isinstance(raw, str):
            return False
        codes = self._by_width.get(len(raw))
        if codes is not None and raw.isascii() and raw.isdigit():
            n = int(raw)
            i = bisect_left(codes, n)
            return i < len(codes) and codes[i] == n
        return raw in self._other

    def __len__(self) -> int:
        return len(self._other) + sum(len(c) for c in self._by_width.values())

    def to_parts(self) -> tuple[dict[int, bytes], list[str]]:
        """The codes of each width as native 8-byte integers, and the other values (for the disk cache)."""
        return {w: codes.tobytes() for w, codes in self._by_width.items()}, sorted(self._other)

    @classmethod
    def from_parts(cls, by_width: Mapping[int, bytes], other: Iterable[str]) -> CompactValues:
        values = cls.__new__(cls)
        values._by_width = {}
        for width, raw in by_width.items():
            codes = array("q")
            codes.frombytes(raw)
            values._by_width[width] = codes
        values._other = frozenset(other)
        return values


@dataclass(frozen=True, slots=True)
class Catalog:
    """Values of one big enumeration and how the type normalises white space before comparing."""

    name: str
    values: CompactValues
    whitespace: str  # preserve | replace | collapse

    def accepts(self, raw: str) -> bool:
        if raw in self.values:
            return True  # written exactly as in the catalogue: the usual case, no normalising needed
        if self.whitespace == "collapse":
            raw = _XML_BLANKS.sub(" ", raw).strip(" ")
        elif self.whitespace == "replace":
            raw = re.sub(r"[\t\n\r]", " ", raw)
        return raw in self.values


@dataclass(frozen=True, slots=True)
class CatalogUse:
    """An attribute typed with a catalogue, directly or through a restriction of it."""

    path: tuple[str, ...]  # Clark names from the namespace's outermost element down to the owner
    attribute: str
    catalog: Catalog
