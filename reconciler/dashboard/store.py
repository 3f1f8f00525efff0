"""What the dashboard reads from the watch loop's state store (``reconciler.state``):
status conditions and the events log, plus ``extend`` and whether a loop runs.
The one dashboard module that knows the store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..engine import Engine
from ..metrics import Metrics
from ..settings import Settings
from .readmodel import EventView, StoreView


class StoreReader(Protocol):
    def view(self) -> StoreView:
        """Conditions of every sandbox the store knows."""

    def events(self, after: int = 0, limit: int = 200) -> list[EventView]:
        """Events with an id above ``after``, oldest first, at most ``limit``."""

    def last_event_id(self) -> int:
        """The id of the newest event (0: none)."""


class NoStore:
    """No state store to read: nothing to add."""

    def view(self) -> StoreView:
        return StoreView()

    def events(self, after: int = 0, limit: int = 200) -> list[EventView]:
        return []

    def last_event_id(self) -> int:
        return 0


class SqliteStore:
    """Reads ``<state_dir>/<instance>.db`` when it exists (the loop or an apply made it).

    Statuses go through ``StateStore``. Events are read by id, which the
    store's own ``events()`` (by time) does not expose: a page polling "after
    the last id" never misses or repeats one, even two in the same second."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _path(self):  # noqa: ANN202 - Path
        from ..state import store_path

        return store_path(self.settings)

    def view(self) -> StoreView:
        from ..state import read_statuses

        statuses = read_statuses(self.settings)
        return StoreView(conditions={name: s.conditions for name, s in statuses.items()})

    def _query(self, sql: str, args: tuple[object, ...]) -> list[tuple]:
        path = self._path()
        if not path.exists():
            return []
        # Read-only: the dashboard never writes the log; WAL lets it read while the loop writes.
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # created but not migrated yet: no events table
        finally:
            db.close()

    def events(self, after: int = 0, limit: int = 200) -> list[EventView]:
        rows = self._query("SELECT id, time, kind, name, message FROM events WHERE id > ? ORDER BY id LIMIT ?",
                           (after, limit))
        return [EventView(id=i, time=t, sandbox=n, kind=k, message=m) for i, t, k, n, m in rows]

    def last_event_id(self) -> int:
        rows = self._query("SELECT MAX(id) FROM events", ())
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0


@dataclass(frozen=True)
class Backing:
    """What the dashboard takes from the watch loop's side: the store, ``extend``,
    and whether a loop converges the instance right now."""

    store: StoreReader
    extend: Callable[[str, int], float | None] | None
    loop_running: Callable[[], bool]
    note: Callable[[str, str], None] = lambda name, message: None  # (sandbox, message) into the log


def for_settings(settings: Settings, engine: Engine | None = None) -> Backing:
    """The state store under ``settings.state_dir``, the loop's ``extend`` (which
    also wakes a running watch) and the watch lock beside the store."""
    from ..lock import watch_running
    from ..loop import extend

    return Backing(
        store=SqliteStore(settings),
        extend=lambda name, seconds: extend(settings, name, seconds, engine=engine),
        loop_running=lambda: watch_running(settings),
        note=lambda name, message: note_event(settings, name, message),
    )


def note_event(settings: Settings, name: str, message: str) -> None:
    """A "requested" event in the log: what someone asked for from the dashboard."""
    from ..state import open_store
    from ..status import LoopEvent

    with open_store(settings) as store:
        store.add_events([LoopEvent("requested", name, message)])


class EventFeed:
    """Counts the events log into the metrics, from the newest event at start on
    (a process's counters start at zero, as Prometheus expects)."""

    def __init__(self, store: StoreReader, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._lock = threading.Lock()
        self._after = store.last_event_id()

    def catch_up(self) -> None:
        with self._lock:
            while True:
                batch = self.store.events(after=self._after, limit=1000)
                for event in batch:
                    self.metrics.record_event(event.kind, event.sandbox, event.message)
                    self._after = event.id
                if len(batch) < 1000:
                    return
