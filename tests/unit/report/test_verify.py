"""The comparison behind ``fiscalflow report verify``: what counts as a difference, and what is
left out as still on its way to the reports."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.report.verify import DayRow, Scope, Verification, compare_days, compare_outcomes, days_back

D = Decimal
R = "north"  # every cell's region but in test_a_row_without_its_records_region_differs_in_two_cells


def at(day: str, region: str = R) -> tuple[str, str]:
    return day, region


def test_equal_days_agree_and_a_missing_or_extra_record_is_a_difference() -> None:
    pg = {at("2023-04-03"): DayRow(3, D("30.5"), priced=3), at("2023-04-04"): DayRow(2, D("2"), priced=2)}
    same = compare_days(pg, {at("2023-04-03"): DayRow(3, D("30.500000")), at("2023-04-04"): DayRow(2, D(2))}, {})
    assert not [c for c in same if c.differs]
    short = compare_days(pg, {at("2023-04-03"): DayRow(2, D("20"))}, {})
    assert [(c.day, c.pg, c.ch) for c in short if c.differs] == [("2023-04-03", 3, 2), ("2023-04-04", 2, 0)]
    extra = compare_days({}, {at("2023-04-05"): DayRow(1, D(1))}, {})
    assert [(c.day, c.pg, c.ch, c.differs) for c in extra] == [("2023-04-05", 0, 1, True)]


def test_totals_are_compared_only_where_postgres_holds_every_amount_of_the_day() -> None:
    ch = {at("2023-04-03"): DayRow(2, D("10"))}
    assert compare_days({at("2023-04-03"): DayRow(2, D("11"), priced=2)}, ch, {})[0].differs
    unpriced = compare_days({at("2023-04-03"): DayRow(2, D("5"), priced=1)}, ch, {})[0]
    assert not unpriced.differs and unpriced.pg_mxn is None


def test_records_newer_than_the_cutoff_are_left_out_of_both_sides() -> None:
    # PostgreSQL: 5 settled + 2 recent; ClickHouse holds the 5 and one of the recent ones.
    cells = compare_days({at("2023-04-03"): DayRow(5, D(5), priced=5, recent=2)},
                         {at("2023-04-03"): DayRow(6, D(6))}, {at("2023-04-03"): DayRow(1, D(1))})
    assert not cells[0].differs and cells[0].settling == 2
    # … but a settled record ClickHouse lacks is a difference even while others are in flight.
    cells = compare_days({at("2023-04-03"): DayRow(5, D(5), priced=5, recent=2)},
                         {at("2023-04-03"): DayRow(5, D(5))}, {at("2023-04-03"): DayRow(1, D(1))})
    assert cells[0].differs


def test_outcomes_compare_per_status_and_reason() -> None:
    pg = {("archived", "", R): (10, 1), ("rejected", "SELLO_INVALID", R): (2, 0),
          ("duplicate", "DUPLICATE_UUID", R): (1, 0)}
    ch = {("archived", "", R): 11, ("rejected", "SELLO_INVALID", R): 2, ("duplicate", "DUPLICATE_UUID", R): 1,
          ("rejected", "XML_MALFORMED", R): 0}
    assert not [c for c in compare_outcomes(pg, ch, {("archived", "", R): 1}) if c.differs]
    diffs = [c for c in compare_outcomes(pg, {**ch, ("rejected", "SELLO_INVALID", R): 3}, {("archived", "", R): 1})
             if c.differs]
    assert [(c.status, c.reason, c.pg, c.ch) for c in diffs] == [("rejected", "SELLO_INVALID", 2, 3)]


def test_a_verification_sums_the_records_off_and_says_what_differs() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cells = compare_days({at("2023-04-03"): DayRow(3, D(3), priced=3)}, {at("2023-04-03"): DayRow(1, D(1))}, {})
    cells += compare_outcomes({("rejected", "X", R): (1, 0)}, {("rejected", "X", R): 2}, {})
    v = Verification(Scope(), now, now, cells)
    assert not v.consistent and v.records_off == 3
    assert "2023-04-03 [north]: PostgreSQL 3, ClickHouse 1" in v.summary() and "rejected X [north]" in v.summary()
    assert v.to_json()["differences"] == 2


def test_a_row_without_its_records_region_differs_in_two_cells() -> None:
    """A report row written before the reports kept regions (region '') against its record's region:
    the day's total agrees, its region's cell and the unknown region's do not."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    pg = {at("2023-04-03"): DayRow(2, D(3), priced=2), at("2023-04-03", "south"): DayRow(1, D(1), priced=1)}
    ch = {at("2023-04-03"): DayRow(1, D(1)), at("2023-04-03", ""): DayRow(1, D(2)),
          at("2023-04-03", "south"): DayRow(1, D(1))}
    cells = compare_days(pg, ch, {})
    cells += compare_outcomes({("rejected", "X", R): (1, 0)}, {("rejected", "X", ""): 1}, {})
    v = Verification(Scope(), now, now, cells)
    assert [(c.day, c.region, c.pg, c.ch) for c in v.differences] == [
        ("2023-04-03", "", 0, 1), ("2023-04-03", R, 2, 1), (None, "", 0, 1), (None, R, 1, 0)]
    assert v.records_off == 4 and v.to_json()["days"] == 1
    assert "2023-04-03 [no region]: PostgreSQL 0, ClickHouse 1" in v.summary()
    assert {c["region"] for c in v.to_json()["cells"]} == {"", R, "south"}


def test_the_start_checks_scope_is_the_last_days_or_every_day() -> None:
    assert days_back(0) == Scope() and Scope().complete
    assert days_back(7, dt.date(2026, 3, 10)) == Scope(dt.date(2026, 3, 4), None)
    assert not days_back(7).complete
