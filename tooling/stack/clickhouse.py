"""ClickHouse for the local stack: only its data directory.

chDB is in-process and allows one process per data directory, so the report service owns the
engine; the stack creates the directory named by ``Settings.clickhouse_dsn()`` and runs nothing.
"""

from __future__ import annotations

from pathlib import Path

from tooling.stack.component import Component
from tooling.stack.state import ProcessRecord


class ClickHouseDir(Component):
    name = "clickhouse"

    @property
    def address(self) -> str:
        return self.settings.clickhouse_dsn()

    @property
    def directory(self) -> Path | None:
        dsn = self.address
        return Path(dsn.removeprefix("chdb://")) if dsn.startswith("chdb://") else None

    def launch(self) -> ProcessRecord:
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        # No process: an http(s) URL is a ClickHouse server someone else runs.
        return ProcessRecord(address=self.address)

    def is_serving(self, record: ProcessRecord) -> bool:
        return self.directory is None or self.directory.is_dir()
