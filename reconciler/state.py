"""The state store: an embedded SQLite database at ``<state_dir>/<instance>.db``.

It keeps what Docker cannot: lifetimes (TTL, extensions), crash-restart
bookkeeping, status conditions and the events log. WAL mode and short
``BEGIN IMMEDIATE`` transactions let the watch loop and any number of CLI
processes use it at once; a ``kill -9`` mid-write loses at most that write.
Lifetimes are written compare-and-set, so an ``extend`` from another process
is never overwritten by a pass that read the row before it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from .backoff import RestartRecord
from .errors import UserError
from .lifetime import Lifetime
from .settings import Settings
from .status import Condition, LoopEvent, SandboxStatus

SCHEMA_VERSION = 1
EVENTS_KEPT_SECONDS = 30 * 86400
EVENTS_KEPT_ROWS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lifetimes (
    name TEXT PRIMARY KEY,
    spec_hash TEXT NOT NULL,
    born_at REAL NOT NULL,
    expires_at REAL,
    expired_at REAL
);
CREATE TABLE IF NOT EXISTS restarts (
    name TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    restarts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    retry_at REAL,
    exit_code INTEGER,
    oom INTEGER NOT NULL DEFAULT 0,
    logs TEXT NOT NULL DEFAULT '',
    crashed_at REAL
);
CREATE TABLE IF NOT EXISTS status (
    name TEXT PRIMARY KEY,
    observed_hash TEXT,
    url TEXT,
    conditions TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    name TEXT,
    message TEXT NOT NULL,
    url TEXT
);
CREATE INDEX IF NOT EXISTS events_time ON events(time);
"""


def store_path(settings: Settings) -> Path:
    return settings.state_dir / f"{settings.instance}.db"


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the store's file (made, in a 0700 directory, if missing): WAL,
    so the loop and any CLI process share it; usable from any thread of this process."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class StateStore:
    """One connection to the store; safe to share between threads of one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = connect(path)
            self._lock = threading.Lock()
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise UserError(f"cannot open the state store {path}: {exc}; check --state-dir") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UserError(f"{self.path} was written by a newer reconciler (schema {version})")
        if version < SCHEMA_VERSION:
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def prune(self) -> None:
        """Keep the events log to its last 30 days and 100,000 rows."""
        with self._write() as db:
            db.execute("DELETE FROM events WHERE time < ?", (time.time() - EVENTS_KEPT_SECONDS,))
            db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (EVENTS_KEPT_ROWS,))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- reading ------------------------------------------------------------------

    def lifetimes(self) -> dict[str, Lifetime]:
        rows = self._rows("SELECT name, spec_hash, born_at, expires_at, expired_at FROM lifetimes")
        return {name: Lifetime(h, born, exp, gone) for name, h, born, exp, gone in rows}

    def restarts(self) -> dict[str, RestartRecord]:
        rows = self._rows(
            "SELECT name, config_hash, restarts, started_at, retry_at, exit_code, oom, logs, crashed_at FROM restarts"
        )
        return {
            name: RestartRecord(h, n, started, retry, code, bool(oom), logs, crashed)
            for name, h, n, started, retry, code, oom, logs, crashed in rows
        }

    def statuses(self) -> dict[str, SandboxStatus]:
        out = {}
        for name, observed_hash, url, raw in self._rows("SELECT name, observed_hash, url, conditions FROM status"):
            conditions = tuple(Condition(**c) for c in json.loads(raw))
            out[name] = SandboxStatus(name, conditions, observed_hash, url)
        return out

    def events(self, since: float | None = None, name: str | None = None, limit: int = 10_000) -> list[LoopEvent]:
        """Logged events, oldest first (the newest ``limit`` of them)."""
        sql = "SELECT time, kind, name, message, url FROM events WHERE time >= ?"
        args: list[object] = [since or 0.0]
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = self._rows(sql, tuple(args))
        return [LoopEvent(kind, n, message, url, t) for t, kind, n, message, url in reversed(rows)]

    # --- writing ------------------------------------------------------------------

    def save(
        self,
        lifetimes: tuple[Mapping[str, Lifetime], Mapping[str, Lifetime]] | None = None,
        restarts: tuple[Mapping[str, RestartRecord], Mapping[str, RestartRecord]] | None = None,
        statuses: tuple[Mapping[str, SandboxStatus], Mapping[str, SandboxStatus]] | None = None,
        events: Iterable[LoopEvent] = (),
    ) -> None:
        """Write what changed, each part as (new, as read before), in one transaction.
        Nothing changed: nothing is written (an idle loop does no I/O here)."""
        events = list(events)
        parts = [p for p in (lifetimes, restarts, statuses) if p is not None]
        if not events and all(_unchanged(new, old) for new, old in parts):
            return
        with self._write() as db:
            if lifetimes is not None:
                _save_lifetimes(db, *lifetimes)
            if restarts is not None:
                _save_restarts(db, *restarts)
            if statuses is not None:
                _save_statuses(db, *statuses)
            db.executemany(
                "INSERT INTO events (time, kind, name, message, url) VALUES (?, ?, ?, ?, ?)",
                [(e.time, e.kind, e.name, e.message, e.url) for e in events],
            )

    def add_events(self, events: Iterable[LoopEvent]) -> None:
        self.save(events=events)

    def replace_lifetime(self, name: str, old: Lifetime | None, new: Lifetime) -> bool:
        """Compare-and-set one lifetime; False when another process changed it first."""
        with self._write() as db:
            return _put_lifetime(db, name, old, new)


def _unchanged(new: Mapping[str, object], old: Mapping[str, object]) -> bool:
    if set(new) != set(old):
        return False
    for name, value in new.items():
        if isinstance(value, SandboxStatus):
            if not value.same_as(old[name]):  # type: ignore[arg-type]
                return False
        elif value != old[name]:
            return False
    return True


def _put_lifetime(db: sqlite3.Connection, name: str, old: Lifetime | None, new: Lifetime) -> bool:
    values = (new.spec_hash, new.born_at, new.expires_at, new.expired_at)
    if old is None:
        cur = db.execute(
            "INSERT OR IGNORE INTO lifetimes (name, spec_hash, born_at, expires_at, expired_at) VALUES (?, ?, ?, ?, ?)",
            (name, *values),
        )
    else:
        cur = db.execute(
            "UPDATE lifetimes SET spec_hash = ?, born_at = ?, expires_at = ?, expired_at = ? "
            "WHERE name = ? AND spec_hash = ? AND born_at = ? AND expires_at IS ? AND expired_at IS ?",
            (*values, name, old.spec_hash, old.born_at, old.expires_at, old.expired_at),
        )
    return cur.rowcount == 1


def _save_lifetimes(db: sqlite3.Connection, new: Mapping[str, Lifetime], old: Mapping[str, Lifetime]) -> None:
    for name, life in new.items():
        if old.get(name) != life:
            _put_lifetime(db, name, old.get(name), life)
    for name in set(old) - set(new):
        gone = old[name]
        db.execute(
            "DELETE FROM lifetimes WHERE name = ? AND spec_hash = ? AND born_at = ? AND expires_at IS ?",
            (name, gone.spec_hash, gone.born_at, gone.expires_at),
        )


def _save_restarts(db: sqlite3.Connection, new: Mapping[str, RestartRecord], old: Mapping[str, RestartRecord]) -> None:
    for name, r in new.items():
        if old.get(name) != r:
            db.execute(
                "INSERT OR REPLACE INTO restarts (name, config_hash, restarts, started_at, retry_at, exit_code, oom, "
                "logs, crashed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, r.config_hash, r.restarts, r.started_at, r.retry_at, r.exit_code, int(r.oom), r.logs,
                 r.crashed_at),
            )
    for name in set(old) - set(new):
        db.execute("DELETE FROM restarts WHERE name = ?", (name,))


def _save_statuses(db: sqlite3.Connection, new: Mapping[str, SandboxStatus], old: Mapping[str, SandboxStatus]) -> None:
    for name, s in new.items():
        if not s.same_as(old.get(name)):
            conditions = json.dumps([
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message, "since": c.since}
                for c in s.conditions
            ])
            db.execute(
                "INSERT OR REPLACE INTO status (name, observed_hash, url, conditions) VALUES (?, ?, ?, ?)",
                (name, s.observed_hash, s.url, conditions),
            )
    for name in set(old) - set(new):
        db.execute("DELETE FROM status WHERE name = ?", (name,))


@contextmanager
def open_store(settings: Settings) -> Iterator[StateStore]:
    """The store of ``settings``' instance, created when missing."""
    store = StateStore(store_path(settings))
    try:
        yield store
    finally:
        store.close()


def read_lifetimes(settings: Settings) -> dict[str, Lifetime]:
    """Stored lifetimes, or none when there is no store yet (nothing is created)."""
    if not store_path(settings).exists():
        return {}
    with open_store(settings) as store:
        return store.lifetimes()


def read_statuses(settings: Settings) -> dict[str, SandboxStatus]:
    if not store_path(settings).exists():
        return {}
    with open_store(settings) as store:
        return store.statuses()
