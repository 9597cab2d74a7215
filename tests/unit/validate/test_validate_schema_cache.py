"""The prepared fast schema kept on disk: read back, it is the one prepared from SAT's files, and it
gives the same violations; a file that is not trustworthy or not readable is ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.validate.cfdi import schema_cache
from services.validate.cfdi.schema import SchemaValidator, compile_prepared, prepare_fast_schema
from services.validate.cfdi.schema_cache import PreparedSchema
from services.validate.cfdi.transport import new_parser, parse

KEY = "k" * 40


@pytest.fixture(scope="module")
def prepared() -> PreparedSchema:
    return prepare_fast_schema()


def _described(p: PreparedSchema) -> object:
    shared = {id(u.catalog): i for i, u in reversed(list(enumerate(p.uses)))}  # which uses share a catalogue
    return (p.imports, p.edited, [(u.path, u.attribute, u.catalog.name, u.catalog.whitespace,
                                   u.catalog.values.to_parts(), shared[id(u.catalog)]) for u in p.uses])


def test_read_back_it_is_the_prepared_schema(prepared: PreparedSchema, tmp_path: Path) -> None:
    schema_cache.store(tmp_path, KEY, prepared)
    loaded = schema_cache.load(tmp_path, KEY)
    assert loaded is not None
    assert _described(loaded) == _described(prepared)
    assert len(prepared.uses) > 40 and sum(len(u.catalog.values) for u in prepared.uses) > 250_000


def test_a_cached_schema_gives_the_same_violations(prepared: PreparedSchema, tmp_path: Path,
                                                   shared_cfdi: Path) -> None:
    schema_cache.store(tmp_path, KEY, prepared)
    loaded = schema_cache.load(tmp_path, KEY)
    assert loaded is not None
    fresh, cached = (SchemaValidator(compiled=compile_prepared(p)) for p in (prepared, loaded))
    parser = new_parser()
    compared = 0
    for path in sorted((shared_cfdi / "samples").rglob("*.xml")):
        parsed = parse(path.read_bytes(), parser, 10 * 1024 * 1024)
        if parsed.root is not None:
            assert cached.violations(parsed.root) == fresh.violations(parsed.root), path.name
            compared += 1
    assert compared >= 40


def test_only_the_newest_key_is_kept(prepared: PreparedSchema, tmp_path: Path) -> None:
    schema_cache.store(tmp_path, "a" * 40, prepared)
    schema_cache.store(tmp_path, KEY, prepared)
    assert [p.name for p in tmp_path.iterdir()] == [f"fast-schema-{KEY}.json"]
    assert schema_cache.load(tmp_path, "a" * 40) is None


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format": 99}', b'{"format": 1, "imports": 3}'])
def test_a_malformed_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    (tmp_path / f"fast-schema-{KEY}.json").write_bytes(content)
    os.chmod(tmp_path / f"fast-schema-{KEY}.json", 0o600)
    assert schema_cache.load(tmp_path, KEY) is None


def test_a_file_others_may_write_is_ignored(prepared: PreparedSchema, tmp_path: Path) -> None:
    directory = tmp_path / "fiscalflow"
    schema_cache.store(directory, KEY, prepared)
    path = directory / f"fast-schema-{KEY}.json"
    assert (path.stat().st_mode & 0o777, directory.stat().st_mode & 0o777) == (0o600, 0o700)
    os.chmod(path, 0o666)
    assert schema_cache.load(directory, KEY) is None
    os.chmod(path, 0o600)
    os.chmod(directory, 0o777)  # anyone could have swapped the file
    assert schema_cache.load(directory, KEY) is None
    os.chmod(directory, 0o700)
    assert schema_cache.load(directory, KEY) is not None


def test_nowhere_to_write_is_not_an_error(prepared: PreparedSchema, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    schema_cache.store(blocked / "fiscalflow", KEY, prepared)
    assert schema_cache.load(blocked / "fiscalflow", KEY) is None
    schema_cache.store(None, KEY, prepared)
    assert schema_cache.load(None, KEY) is None


def test_the_directory_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert schema_cache.cache_dir() == tmp_path / "fiscalflow"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    assert schema_cache.cache_dir() == Path.home() / ".cache" / "fiscalflow"
