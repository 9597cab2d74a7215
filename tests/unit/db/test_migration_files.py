"""Migration files: each version number once (two files of one version: the second is never applied,
or fails every service's start on the schema_migrations primary key)."""

from __future__ import annotations

from collections import Counter

from shared.db.migrate import migrations


def test_every_migration_has_a_version_of_its_own() -> None:
    versions = Counter(version for version, _, _ in migrations())
    assert versions and {v: n for v, n in versions.items() if n > 1} == {}
