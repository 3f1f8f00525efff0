"""Claim records: which pool member became which sandbox, in the state store.

A table of its own in ``<state_dir>/<instance>.db`` (the state store's file,
WAL mode, so the loop and any CLI process share it). The engine writes a record
before it renames a member and marks it complete once the sandbox's command is
started; ``observe`` reads them to present claimed members as their sandboxes
(``pools.present_claimed``). Reading never creates the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .engine import EngineError
from .pools import Claim

_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    sandbox TEXT PRIMARY KEY,
    container_id TEXT NOT NULL,
    labels TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    claimed_at REAL NOT NULL
);
"""


class ClaimStoreError(EngineError):
    """The claim records cannot be read or written: a claim is not attempted (the
    sandbox is created normally) and an observation fails rather than guess."""


class ClaimBook:
    """The claim records of one instance; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings) -> ClaimBook:  # noqa: ANN001 - settings.Settings
        from .state import store_path

        return cls(store_path(settings))

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._db is not None:
            return self._db
        if not create and not self.path.exists():
            return None
        from .state import connect

        db = connect(self.path)
        db.executescript(_SCHEMA)
        self._db = db
        return db

    @contextmanager
    def _database(self, create: bool) -> Iterator[sqlite3.Connection | None]:
        with self._lock:
            try:
                yield self._connect(create)
            except (OSError, sqlite3.Error, ValueError) as exc:
                raise ClaimStoreError(f"cannot use the claim records in {self.path}: {exc}; check --state-dir") from exc

    def read(self) -> dict[str, Claim]:
        """Every record, by sandbox name ({} when there is no state store yet)."""
        with self._database(create=False) as db:
            if db is None:
                return {}
            rows = db.execute("SELECT sandbox, container_id, labels, complete, claimed_at FROM claims").fetchall()
            return {s: Claim(s, cid, json.loads(raw), bool(done), at) for s, cid, raw, done, at in rows}

    def begin(self, sandbox: str, container_id: str, labels: dict[str, str]) -> None:
        """Record a claim about to happen (replacing any older record of ``sandbox``)."""
        with self._database(create=True) as db:
            assert db is not None
            db.execute(
                "INSERT OR REPLACE INTO claims (sandbox, container_id, labels, complete, claimed_at) "
                "VALUES (?, ?, ?, 0, ?)",
                (sandbox, container_id, json.dumps(labels, sort_keys=True), time.time()),
            )

    def finish(self, sandbox: str, container_id: str) -> None:
        """The sandbox's command is started: the claim is complete."""
        self._run("UPDATE claims SET complete = 1 WHERE sandbox = ? AND container_id = ?", (sandbox, container_id))

    def forget(self, sandbox: str, container_id: str) -> None:
        """The claimed container is gone (its record only: a newer claim keeps its own)."""
        self._run("DELETE FROM claims WHERE sandbox = ? AND container_id = ?", (sandbox, container_id))

    def prune(self, stale: dict[str, str]) -> None:
        """Drop records (sandbox -> container id) whose container no longer exists."""
        for sandbox, container_id in stale.items():
            self.forget(sandbox, container_id)

    def _run(self, sql: str, args: tuple[object, ...]) -> None:
        with self._database(create=False) as db:
            if db is not None:
                db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
