"""The image installs the product only (tooling/ is never in it): its ``fiscalflow`` must still work.

The product's command is run in a process where the ``tooling`` package cannot be imported, as in
the image; the same command with the tooling (a developer's .venv) must show the tooling's groups,
so skipping them is not hiding a broken import.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT

# A finder ahead of all others answers for `tooling` as an environment without it does.
WITHOUT_TOOLING = """
import sys

class NoTooling:
    def find_spec(self, name, path=None, target=None):
        if name == "tooling" or name.startswith("tooling."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTooling())
from services.cli import main
main()
"""
WITH_TOOLING = "from services.cli import main; main()"
TOOLING_GROUPS = {"stack", "issuer", "demo", "bench"}
PRODUCT_COMMANDS = {"service", "validate", "dlq", "report", "config", "topology", "publish", "register", "job",
                    "records"}


def fiscalflow(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", program, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def commands(help_text: str) -> set[str]:
    """The command names of a typer help screen (the first word of each row of its boxes)."""
    names = set()
    for line in help_text.splitlines():
        words = line.strip("│ ").split()
        if words and words[0].isidentifier():
            names.add(words[0])
    return names


def test_without_the_tooling_fiscalflow_has_the_product_commands_only() -> None:
    proc = fiscalflow(WITHOUT_TOOLING, "--help")
    assert proc.returncode == 0, proc.stderr
    shown = commands(proc.stdout)
    assert PRODUCT_COMMANDS <= shown, PRODUCT_COMMANDS - shown
    assert not TOOLING_GROUPS & shown


@pytest.mark.parametrize("args", [["service", "run", "--help"], ["validate", "--help"], ["dlq", "--help"],
                                  ["report", "--help"]], ids=" ".join)
def test_without_the_tooling_the_product_commands_run(args: list[str]) -> None:
    proc = fiscalflow(WITHOUT_TOOLING, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout


def test_with_the_tooling_fiscalflow_adds_its_groups() -> None:
    proc = fiscalflow(WITH_TOOLING, "--help")
    assert proc.returncode == 0, proc.stderr
    assert TOOLING_GROUPS | PRODUCT_COMMANDS <= commands(proc.stdout)
