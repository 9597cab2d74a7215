"""``fiscalflow``'s start-up: every command pays for what importing ``services.cli`` and building the
typer app imports, so the command groups import their heavy dependencies inside the commands
(issue 16: importing ``services.cli`` took ~0.4 s of CPU, ~0.1 s since).  No timings here: the
heavy modules must not be imported at all, which a new top-level import in any group breaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Packages that cost tens to hundreds of milliseconds each, none needed to parse a command line or
# print a help screen.  (pydantic itself is not one: typer imports it to convert a command's
# parameters, typer._adapters; our models built on it are, shared.settings and the messages.)
HEAVY = ("aiobotocore", "asyncpg", "boto3", "botocore", "chdb", "confluent_kafka", "cryptography", "fastapi",
         "httpx", "lxml", "prometheus_client", "pydantic_settings", "satcfdi", "starlette", "uvicorn")
HEAVY_MODULES = ("shared.settings", "shared.domain.messages", "tooling.stack.stack", "asyncio")

BUILD_APP = """
import json, sys
import typer.main
from services.cli import app
typer.main.get_command(app)  # every group and command, with its parameters
print(json.dumps(sorted(sys.modules)))
"""

HELP = """
import json, sys
from services.cli import main
sys.argv = ["fiscalflow", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _heavy(modules: list[str]) -> list[str]:
    return sorted(({m.split(".")[0] for m in modules} & set(HEAVY)) | (set(modules) & set(HEAVY_MODULES)))


def _run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-c", program, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_importing_the_cli_and_building_its_commands_imports_nothing_heavy() -> None:
    modules = json.loads(_run(BUILD_APP).stdout)
    assert "tooling.stack.cli" in modules and "services.report.cli" in modules  # every group was registered
    assert _heavy(modules) == [], "move these imports inside the commands that need them"


@pytest.mark.parametrize("args", [["--help"], ["validate", "--help"], ["stack", "--help"], ["report", "--help"]],
                         ids=" ".join)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    proc = _run(HELP, *args)
    assert "Usage: fiscalflow" in proc.stdout
    assert _heavy(json.loads(proc.stderr.splitlines()[-1])) == []
