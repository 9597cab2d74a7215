"""What a service's PostgreSQL connections call themselves (shared/db/migrate.py)."""

from __future__ import annotations

from shared.db.migrate import SESSION_SETTINGS, application_name, service_of, session_settings


def test_the_name_says_stage_and_replica_as_postgresql_will_show_it() -> None:
    assert application_name("validate", "validate-5d8f7-abcde") == "fiscalflow-validate/validate-5d8f7-abcde"
    # PostgreSQL shows non-ASCII as "?" and keeps 63 bytes: the name is already what it will show.
    assert application_name("store", "réplica\n1") == "fiscalflow-store/r?plica?1"
    long = application_name("download", "x" * 100)
    assert len(long) == 63 and long.startswith("fiscalflow-download/xxx")


def test_an_operators_application_name_in_the_dsn_wins() -> None:
    ours = session_settings("postgresql://u@db:5432/ff", "fiscalflow-ingest/a")
    assert ours == {**SESSION_SETTINGS, "application_name": "fiscalflow-ingest/a"}
    theirs = session_settings("postgresql://u@db:5432/ff?sslmode=require&application_name=audit", "fiscalflow-x/a")
    assert "application_name" not in theirs and theirs == SESSION_SETTINGS
    assert session_settings("postgresql://u@db/ff") == SESSION_SETTINGS


def test_the_service_is_read_back_from_the_name_and_other_names_are_not_ours() -> None:
    # The benchmarks split PostgreSQL's CPU by this (tooling/bench/harness.py).
    assert service_of(application_name("validate", "validate-5d8f7-abcde")) == "validate"
    assert service_of(application_name("report", "x" * 100)) == "report"
    assert service_of("psql") is None
    assert service_of("fiscalflow-") is None
    assert service_of("pgadmin fiscalflow-store/a") is None
