"""Calculation history in SQLite (stdlib sqlite3), at the path in ``CALC_DB``."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS calculations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    a REAL NOT NULL,
    op TEXT NOT NULL,
    b REAL NOT NULL,
    result REAL NOT NULL,
    created_at TEXT NOT NULL
)
"""


def db_path() -> Path:
    """Where the history lives: ``$CALC_DB``, else ``./history.db``."""
    return Path(os.environ.get("CALC_DB") or "history.db")


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    """A fresh connection per call: uvicorn runs sync endpoints on many threads."""
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        # Cheap when the table exists, and survives the file being deleted.
        conn.execute(SCHEMA)
        with conn:  # commits, or rolls back on error
            yield conn


def add(a: float, op: str, b: float, result: float) -> dict[str, Any]:
    """Store one calculation and return it as a row dict."""
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with connect() as conn:
        cur = conn.execute(
            "INSERT INTO calculations (a, op, b, result, created_at) VALUES (?, ?, ?, ?, ?)",
            (a, op, b, result, created_at),
        )
        row_id = cur.lastrowid
    return {"id": row_id, "a": a, "op": op, "b": b, "result": result, "created_at": created_at}


def recent(limit: int = 50) -> list[dict[str, Any]]:
    """The last ``limit`` calculations, newest first."""
    with connect() as conn:
        rows = conn.execute(
            "SELECT id, a, op, b, result, created_at FROM calculations ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
    return [dict(row) for row in rows]


def clear() -> int:
    """Delete all history; returns how many calculations were removed."""
    with connect() as conn:
        return conn.execute("DELETE FROM calculations").rowcount
