"""The report sink's IN lists (services/report/sink.py ``strings_in``) are the literals
clickhouse-connect renders for a list parameter, whatever the strings hold."""

from __future__ import annotations

from clickhouse_connect.driver.binding import format_query_value
from hypothesis import given
from hypothesis import strategies as st

from services.report.sink import strings_in


@given(st.lists(st.text()))
def test_any_strings_render_as_clickhouse_connect_renders_them(values: list[str]) -> None:
    assert strings_in(values) == format_query_value(values)


def test_quotes_backslashes_and_control_characters_are_escaped() -> None:
    assert strings_in(["a'b", "c\\d", "e`f", "g\th\ni", "%(x)s"]) == r"['a\'b', 'c\\d', 'e\`f', 'g\	h\
i', '%(x)s']"
