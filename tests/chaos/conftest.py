"""The chaos suite's figures reach the terminal whether or not pytest captures output (``-s``):
tests append lines to ``REPORT`` and the terminal summary prints them."""

from __future__ import annotations

import pytest

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("chaos")
        for line in REPORT:
            terminalreporter.write_line(line)
