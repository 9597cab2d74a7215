"""The comparison behind ``fiscalflow report verify``: what counts as a difference, and what is
left out as still on its way to the reports."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from services.report.verify import DayRow, Scope, Verification, compare_days, compare_outcomes, days_back

D = Decimal


def test_equal_days_agree_and_a_missing_or_extra_record_is_a_difference() -> None:
    pg = {"2023-04-03": DayRow(3, D("30.5"), priced=3), "2023-04-04": DayRow(2, D("2"), priced=2)}
    same = compare_days(pg, {"2023-04-03": DayRow(3, D("30.500000")), "2023-04-04": DayRow(2, D(2))}, {})
    assert not [c for c in same if c.differs]
    short = compare_days(pg, {"2023-04-03": DayRow(2, D("20"))}, {})
    assert [(c.day, c.pg, c.ch) for c in short if c.differs] == [("2023-04-03", 3, 2), ("2023-04-04", 2, 0)]
    extra = compare_days({}, {"2023-04-05": DayRow(1, D(1))}, {})
    assert [(c.day, c.pg, c.ch, c.differs) for c in extra] == [("2023-04-05", 0, 1, True)]


def test_totals_are_compared_only_where_postgres_holds_every_amount_of_the_day() -> None:
    ch = {"2023-04-03": DayRow(2, D("10"))}
    assert compare_days({"2023-04-03": DayRow(2, D("11"), priced=2)}, ch, {})[0].differs
    unpriced = compare_days({"2023-04-03": DayRow(2, D("5"), priced=1)}, ch, {})[0]
    assert not unpriced.differs and unpriced.pg_mxn is None


def test_records_newer_than_the_cutoff_are_left_out_of_both_sides() -> None:
    # PostgreSQL: 5 settled + 2 recent; ClickHouse holds the 5 and one of the recent ones.
    cells = compare_days({"2023-04-03": DayRow(5, D(5), priced=5, recent=2)},
                         {"2023-04-03": DayRow(6, D(6))}, {"2023-04-03": DayRow(1, D(1))})
    assert not cells[0].differs and cells[0].settling == 2
    # … but a settled record ClickHouse lacks is a difference even while others are in flight.
    cells = compare_days({"2023-04-03": DayRow(5, D(5), priced=5, recent=2)},
                         {"2023-04-03": DayRow(5, D(5))}, {"2023-04-03": DayRow(1, D(1))})
    assert cells[0].differs


def test_outcomes_compare_per_status_and_reason() -> None:
    pg = {("archived", ""): (10, 1), ("rejected", "SELLO_INVALID"): (2, 0), ("duplicate", "DUPLICATE_UUID"): (1, 0)}
    ch = {("archived", ""): 11, ("rejected", "SELLO_INVALID"): 2, ("duplicate", "DUPLICATE_UUID"): 1,
          ("rejected", "XML_MALFORMED"): 0}
    assert not [c for c in compare_outcomes(pg, ch, {("archived", ""): 1}) if c.differs]
    diffs = [c for c in compare_outcomes(pg, {**ch, ("rejected", "SELLO_INVALID"): 3}, {("archived", ""): 1})
             if c.differs]
    assert [(c.status, c.reason, c.pg, c.ch) for c in diffs] == [("rejected", "SELLO_INVALID", 2, 3)]


def test_a_verification_sums_the_records_off_and_says_what_differs() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cells = compare_days({"2023-04-03": DayRow(3, D(3), priced=3)}, {"2023-04-03": DayRow(1, D(1))}, {})
    cells += compare_outcomes({("rejected", "X"): (1, 0)}, {("rejected", "X"): 2}, {})
    v = Verification(Scope(), now, now, cells)
    assert not v.consistent and v.records_off == 3
    assert "2023-04-03: PostgreSQL 3, ClickHouse 1" in v.summary() and "rejected X" in v.summary()
    assert v.to_json()["differences"] == 2


def test_the_start_checks_scope_is_the_last_days_or_every_day() -> None:
    assert days_back(0) == Scope() and Scope().complete
    assert days_back(7, dt.date(2026, 3, 10)) == Scope(dt.date(2026, 3, 4), None)
    assert not days_back(7).complete
