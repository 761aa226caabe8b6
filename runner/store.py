"""Local results store: one SQLite file (WAL) indexing every job of every sweep.

The job directory's ``result.json`` is the source of truth; the store is an index over them that
can always be rebuilt with :meth:`ResultStore.ingest`. Writers from several processes are safe:
WAL mode, a busy timeout, and one short transaction per upsert.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Where the runner indexes results and the dashboard reads them, unless overridden.
DEFAULT_STORE = Path("~/.cache/quantloop/store.sqlite")


def default_store_path() -> Path:
    """``$QUANTLOOP_STORE``, else ``$QUANTLOOP_CACHE/store.sqlite``, else :data:`DEFAULT_STORE`:
    the same rule as the runner's ``paths.store`` (runner/config.py)."""
    if os.environ.get("QUANTLOOP_STORE"):
        return Path(os.environ["QUANTLOOP_STORE"]).expanduser()
    if os.environ.get("QUANTLOOP_CACHE"):
        return Path(os.environ["QUANTLOOP_CACHE"]).expanduser() / DEFAULT_STORE.name
    return DEFAULT_STORE.expanduser()


_COLUMNS = (
    "id",
    "sweep_id",
    "job_dir",
    "model_name",
    "quant_format",
    "method",
    "status",
    "passed_threshold",
    "score",
    "size_mb",
    "bits_per_weight",
    "timestamp",
    "duration_seconds",
    "config_hash",
)
FILTERS = ("model_name", "quant_format", "method", "sweep_id", "status")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    sweep_id TEXT, job_dir TEXT, model_name TEXT, quant_format TEXT, method TEXT, status TEXT,
    passed_threshold INTEGER, score REAL, size_mb REAL, bits_per_weight REAL,
    timestamp TEXT, duration_seconds REAL, config_hash TEXT,
    result_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_time ON jobs(timestamp);
{"".join(f"CREATE INDEX IF NOT EXISTS jobs_{c} ON jobs({c});" for c in FILTERS)}
"""


class ResultStore:
    """Index of result.json records. ``path`` is created on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0)
        con.execute("PRAGMA busy_timeout=60000")
        try:
            with con:  # one transaction: commit on success, rollback on error
                yield con
        finally:
            con.close()

    def add(self, result: dict[str, Any]) -> None:
        """Insert or replace one job's record (keyed by ``result['id']``)."""
        row = [result.get(c) for c in _COLUMNS]
        row[_COLUMNS.index("passed_threshold")] = int(bool(result.get("passed_threshold")))
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))
        with self._connect() as con:
            con.execute(
                f"INSERT OR REPLACE INTO jobs ({cols}, result_json) VALUES ({marks})",
                [*row, json.dumps(result, sort_keys=True)],
            )

    def ingest(self, root: str | Path) -> int:
        """Index every ``result.json`` under ``root``; returns how many were read."""
        n = 0
        for path in sorted(Path(root).rglob("result.json")):
            self.add(json.loads(path.read_text()))
            n += 1
        return n

    @staticmethod
    def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; valid filters: {', '.join(FILTERS)}")
        items = [(k, v) for k, v in filters.items() if v is not None]
        if not items:
            return "", []
        return " WHERE " + " AND ".join(f"{k} = ?" for k, _ in items), [v for _, v in items]

    def query(
        self, limit: int | None = None, offset: int = 0, newest_first: bool = True, **filters: Any
    ) -> list[dict[str, Any]]:
        """Full records, filtered by any of ``FILTERS``, sorted by time."""
        where, args = self._where(filters)
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT result_json FROM jobs{where} ORDER BY timestamp {order}, id {order}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args = [*args, int(limit), int(offset)]
        with self._connect() as con:
            return [json.loads(r[0]) for r in con.execute(sql, args)]

    def count(self, **filters: Any) -> int:
        where, args = self._where(filters)
        with self._connect() as con:
            return con.execute(f"SELECT COUNT(*) FROM jobs{where}", args).fetchone()[0]
