"""No published or guessable secret guards a port reachable beyond this machine."""

from __future__ import annotations

import pytest

from services.registry import run
from shared.settings import Settings
from shared.topics import Stage

STRONG = "x7Jq2mZp9Lw4Rt8Ys1Vb6Nc3"  # 24 characters
READ = "r3Kd8sPq1Zx5Wm7Tv2Lc9Hb4"


def make(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_the_local_stack_on_loopback_keeps_its_defaults(host: str) -> None:
    assert make(http_host=host).exposed_secret_problems() == []


def test_beyond_loopback_the_defaults_are_refused_and_strong_secrets_accepted() -> None:
    problems = make(http_host="0.0.0.0").exposed_secret_problems()
    assert [p.split()[0] for p in problems] == ["api_token", "read_token", "s3_secret_key"]
    for token in ("fiscalflow-demo-token", "fiscalflow-dev-token", "short-but-random-9f3"):
        assert make(http_host="0.0.0.0", api_token=token, read_token=READ,
                    s3_secret_key=STRONG).exposed_secret_problems()
    for token in ("fiscalflow-demo-read-token", "fiscalflow-dev-read-token", "short-but-random-9f3"):
        assert make(http_host="0.0.0.0", api_token=STRONG, read_token=token,
                    s3_secret_key=STRONG).exposed_secret_problems()
    assert make(http_host="0.0.0.0", api_token=STRONG, read_token=READ,
                s3_secret_key=STRONG).exposed_secret_problems() == []
    # One token for both roles would let every reader submit and replay.
    assert make(http_host="0.0.0.0", api_token=STRONG, read_token=STRONG,
                s3_secret_key=STRONG).exposed_secret_problems() == [
        "read_token equals api_token (every reader could submit and replay)"]
    # A callback secret, when set, must be as strong; S3 keys from the credential chain are not ours to check.
    assert make(http_host="10.1.2.3", api_token=STRONG, read_token=READ, s3_secret_key=STRONG,
                callback_secret="tiny").exposed_secret_problems() == [
        "callback_secret is a published default or shorter than 24 characters"]
    assert make(http_host="::", api_token=STRONG, read_token=READ,
                s3_credentials="chain").exposed_secret_problems() == []


def test_a_service_refuses_to_start_before_it_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    # 192.0.2.1 (TEST-NET-1) is not on this machine: were the check missing, the bind would fail, not listen.
    monkeypatch.setenv("FISCALFLOW_HTTP_HOST", "192.0.2.1")
    monkeypatch.delenv("FISCALFLOW_API_TOKEN", raising=False)
    monkeypatch.delenv("FISCALFLOW_API_TOKEN_FILE", raising=False)
    with pytest.raises(SystemExit, match=r"refusing to start on 192\.0\.2\.1 .*api_token"):
        run(Stage.INGEST)


def test_each_stage_is_checked_for_the_secrets_it_uses() -> None:
    """The chart mounts each stage its own secrets: validate has no API token, store no read token."""
    exposed = make(http_host="0.0.0.0")  # every secret a published default
    assert exposed.exposed_secret_problems(Stage.VALIDATE) == ["s3_secret_key is unset (the local stack's default)"]
    assert [p.split()[0] for p in exposed.exposed_secret_problems(Stage.INGEST)] == [
        "api_token", "read_token", "s3_secret_key"]  # s3: source: s3 jobs list the S3 source bucket
    assert [p.split()[0] for p in exposed.exposed_secret_problems(Stage.STORE)] == ["s3_secret_key"]
    assert [p.split()[0] for p in exposed.exposed_secret_problems(Stage.REPORT)] == [
        "api_token", "read_token", "s3_secret_key"]
    validate = make(http_host="0.0.0.0", s3_secret_key=STRONG)
    assert validate.exposed_secret_problems(Stage.VALIDATE) == [] and validate.exposed_secret_problems(Stage.INGEST)
