"""The browser tests' fixtures: Debian's chromium (installed on demand, like the stack's other
Debian packages), driven by Playwright with ``executable_path``; screenshots go to
``$FISCALFLOW_ARTIFACTS_DIR`` or the session's tmp dir (never a tracked path) and are listed at the
end of the run."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tooling.issuers.generator import InvoiceGenerator
from tooling.issuers.pki import DemoPKI
from tooling.stack.component import ensure_debian_package

SHOTS: list[Path] = []  # every screenshot of the session, listed in the terminal summary
# Read at import: the stack fixture takes every FISCALFLOW_* variable out of the environment.
ARTIFACTS_DIR = os.environ.get("FISCALFLOW_ARTIFACTS_DIR", "")


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> InvoiceGenerator:
    # A fresh seed: the test database outlives sessions and TFD UUIDs derive from the seed.
    return InvoiceGenerator(DemoPKI.ensure(tmp_path_factory.mktemp("pki"), issuers=2), seed=random.randrange(1 << 30))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    return ensure_debian_package("chromium", "chromium")


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(ARTIFACTS_DIR) / "console" if ARTIFACTS_DIR else tmp_path_factory.mktemp("console-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True)
        try:
            yield b
        finally:
            b.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SHOTS:
        terminalreporter.section("web console screenshots")
        for shot in SHOTS:
            terminalreporter.write_line(str(shot))
