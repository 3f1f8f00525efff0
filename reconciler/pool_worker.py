"""Carrying out pool changes (starting and removing idle members), at once for
``reconcile apply``, or in the background for the watch loop, so a pass that
claims a member publishes its route without waiting for the refill."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from . import backoff
from .engine import EngineError
from .pools import PoolChange
from .status import LoopEvent

WORKERS = 4  # member networks are made one at a time anyway (dockerd serialises them)
RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # seconds before a failed refill is tried again


@dataclass(frozen=True)
class PoolResult:
    change: PoolChange
    ok: bool
    error: str | None = None
    container_id: str | None = None
    seconds: float = 0.0


def run_pool_changes(engine, changes: Sequence[PoolChange], created_at: int) -> list[PoolResult]:  # noqa: ANN001 - a pool-capable engine
    """Every change, errors as values; removals and starts run side by side."""

    def run(change: PoolChange) -> PoolResult:
        started = time.monotonic()
        try:
            if change.action == "destroy":
                assert change.member is not None
                engine.remove_member(change.member)
                return PoolResult(change, True, None, change.member.container_id, time.monotonic() - started)
            assert change.desired is not None
            container_id = engine.create_member(change.desired, created_at)
            return PoolResult(change, True, None, container_id, time.monotonic() - started)
        except EngineError as exc:
            return PoolResult(change, False, str(exc), None, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - one member's failure must not stop the others
            return PoolResult(change, False, f"{type(exc).__name__}: {exc}", None, time.monotonic() - started)

    if not changes:
        return []
    # "reconcile_" threads still running when a watch stops are left behind (cli_loop), as the executor's are.
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(changes)), thread_name_prefix="reconcile_pool") as workers:
        return list(workers.map(run, changes))


def pool_events(results: Iterable[PoolResult], now: float) -> list[LoopEvent]:
    """One event per pool and outcome: members started, members removed (and why), failures."""
    started: dict[str, int] = defaultdict(int)
    removed: dict[tuple[str, str], int] = defaultdict(int)
    failed: dict[str, list[str]] = defaultdict(list)
    for r in results:
        pool = r.change.pool
        if not r.ok:
            failed[pool].append(r.error or "unknown error")
        elif r.change.action == "create":
            started[pool] += 1
        else:
            removed[(pool, r.change.cause)] += 1
    out = []
    for (pool, cause), n in sorted(removed.items()):
        out.append(LoopEvent("pool", pool, f"removed {n} idle member(s): {cause}", None, now))
    for pool, n in sorted(started.items()):
        out.append(LoopEvent("pool", pool, f"started {n} idle member(s)", None, now))
    for pool, errors in sorted(failed.items()):
        out.append(LoopEvent("error", pool, f"pool: {len(errors)} member change(s) failed: {errors[0]}", None, now))
    return out


class PoolFiller:
    """One batch of pool changes at a time, in a thread of its own.

    While a batch runs, new batches are refused (the pass that comes after it
    plans again from a fresh look), and the members it removes are ``busy``:
    passes must not claim them. After a failed batch nothing is taken for a
    backoff delay, so a pool that cannot be filled does not spin the loop."""

    def __init__(self, engine, on_done: Callable[[list[PoolResult]], None]) -> None:  # noqa: ANN001
        self.engine = engine
        self.on_done = on_done
        self._lock = threading.Lock()
        self._batch: tuple[PoolChange, ...] | None = None
        self._busy: frozenset[str] = frozenset()
        self._failures = 0
        self._retry_at = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pool-filler", daemon=True)
        self._thread.start()

    def submit(self, changes: Sequence[PoolChange]) -> bool:
        """Start ``changes`` in the background; False when a batch is running or backing off."""
        with self._lock:
            if self._batch is not None or time.monotonic() < self._retry_at or self._stop.is_set():
                return False
            self._batch = tuple(changes)
            self._busy = frozenset(c.member.container_id for c in changes if c.member is not None)
        self._wake.set()
        return True

    def busy(self) -> frozenset[str]:
        """Container ids of the members the running batch removes."""
        with self._lock:
            return self._busy

    def stop(self, timeout: float = 2.0) -> None:
        """Stop taking batches; a running one is left to finish (or to the next watch)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                batch = self._batch
            if batch is None:
                continue
            results = run_pool_changes(self.engine, batch, int(time.time()))
            failed = any(not r.ok for r in results)
            with self._lock:
                self._batch, self._busy = None, frozenset()
                self._failures = self._failures + 1 if failed else 0
                if failed:
                    self._retry_at = time.monotonic() + backoff.delay(self._failures, RETRY_FIRST, RETRY_MAX)
            try:
                self.on_done(results)
            except Exception:  # noqa: BLE001 - a callback's bug must not end the filler
                pass
