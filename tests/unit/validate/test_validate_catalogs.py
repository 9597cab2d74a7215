"""SAT's big catalogues, kept compactly: membership must stay exactly the catalogue's strings."""

from __future__ import annotations

import pytest

from services.validate.cfdi.schema import CompactValues, compile_schema


def test_codes_match_only_with_their_own_width_and_digits() -> None:
    values = CompactValues(["01010101", "50211503", "001", "XDJ", "I277.5", "7"])
    assert len(values) == 6
    for present in ("01010101", "50211503", "001", "XDJ", "I277.5", "7"):
        assert present in values
    # Same number, other width; non-ASCII digits; signs and blanks: none is a catalogue value.
    for absent in ("1010101", "001010101", "1", "01", "٠٠١", "+001", " 001", "001 ", "-7", "", "xdj", "07"):
        assert absent not in values


@pytest.mark.parametrize(("catalog", "good", "bad"), [
    ("c_CodigoPostal", "06600", "6600"),
    ("c_ClaveProdServ", "01010101", "1010101"),
    ("c_ClaveUnidad", "H87", "H88X"),
    ("c_Pais", "MEX", "MXX"),
])
def test_the_compiled_schema_catalogues_answer_like_the_sat_lists(catalog: str, good: str, bad: str) -> None:
    cats = {u.catalog.name: u.catalog for uses in compile_schema(True).uses_by_tag.values() for u in uses}
    assert cats[catalog].accepts(good)
    assert not cats[catalog].accepts(bad)
