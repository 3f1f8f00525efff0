"""The executor: carries out a Plan through an engine, in a bounded thread pool.

Each change's outcome is a value (``ChangeResult``): a failing sandbox is
reported and every other change still runs, as in docker-compose's parallel.py.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Callable

from .engine import Engine, EngineError
from .plan import Change, Plan


STOP_GRACE = 2.0  # seconds changes under way get once ``cancel`` is set


def default_workers() -> int:
    # Docker serialises much of create/start; past ~4 threads per core the
    # daemon, not the client, is the bottleneck (ground truth: 1.8x on 2 cores).
    return max(2, min(16, 4 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class ChangeResult:
    change: Change
    ok: bool
    error: str | None = None
    permanent: bool = False
    container_id: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            **self.change.to_json(),
            "ok": self.ok,
            "error": self.error,
            "permanent": self.permanent,
            "new_container_id": self.container_id,
            "seconds": round(self.seconds, 3),
        }


def run_change(change: Change, engine: Engine, created_at: int) -> ChangeResult:
    """One change, with its error captured as a value."""
    started = time.monotonic()
    container_id = None
    try:
        if change.action == "destroy":
            assert change.observed is not None
            engine.remove(change.observed, remove_network=True, remove_volumes=change.remove_volumes)
        elif change.action == "start":
            assert change.observed is not None
            engine.start(change.observed)
            container_id = change.observed.container_id
        elif change.action == "recreate":
            assert change.observed is not None and change.desired is not None
            # The network and volumes stay: data survives a recreate.
            engine.remove(change.observed, remove_network=False, remove_volumes=False)
            container_id, change = _create(change, engine, created_at)
        elif change.action == "create":
            assert change.desired is not None
            container_id, change = _create(change, engine, created_at)
    except EngineError as exc:
        return ChangeResult(change, False, str(exc), exc.permanent, None, time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - one sandbox's bug must not stop the others
        return ChangeResult(change, False, f"{type(exc).__name__}: {exc}", False, None, time.monotonic() - started)
    return ChangeResult(change, True, None, False, container_id, time.monotonic() - started)


def _create(change: Change, engine: Engine, created_at: int) -> tuple[str, Change]:
    """Create the sandbox, from its pool member when the plan assigned one. A claim
    that fails (the member died, was taken) falls back to a normal create, and the
    change's cause, which the events log shows, says so."""
    assert change.desired is not None
    if change.claim is not None:
        try:
            return engine.claim(change.claim, change.desired, created_at), change  # type: ignore[attr-defined]
        except EngineError as exc:
            cause = change.cause.replace("claimed from", "claim from") + f" failed ({exc}), created normally"
            change = replace(change, claim=None, cause=cause)
    return engine.create(change.desired, created_at), change


def execute(
    plan: Plan,
    engine: Engine,
    created_at: Callable[[Change], int] | None = None,
    workers: int | None = None,
    on_result: Callable[[ChangeResult], None] | None = None,
    cancel: threading.Event | None = None,
) -> list[ChangeResult]:
    """Run every change of ``plan``; orphan networks and volumes go last.

    ``cancel``: once set, changes not yet begun are skipped, and those under way
    get ``STOP_GRACE`` seconds before they are left to finish on their own
    (both reported as not ok: the next pass, after a restart too, completes them)."""
    created_at = created_at or (lambda change: int(time.time()))
    results: list[ChangeResult] = []

    def run(change: Change) -> ChangeResult:
        if cancel is not None and cancel.is_set():
            return ChangeResult(change, False, "skipped: the reconciler is stopping")
        return run_change(change, engine, created_at(change))

    if plan.changes:
        size = min(workers or default_workers(), len(plan.changes))
        pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="reconcile")
        futures = {pool.submit(run, c): c for c in plan.changes}
        pending = set(futures)
        give_up_at: float | None = None
        try:
            while pending:
                done, pending = wait(pending, timeout=None if cancel is None else 0.1, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    results.append(result)
                    if on_result:
                        on_result(result)
                if cancel is not None and cancel.is_set():
                    give_up_at = give_up_at or time.monotonic() + STOP_GRACE
                    if time.monotonic() >= give_up_at:
                        break
        finally:
            pool.shutdown(wait=not pending, cancel_futures=True)
        for future in pending:
            why = "skipped: the reconciler is stopping" if future.cancelled() else "abandoned: the reconciler stopped"
            results.append(ChangeResult(futures[future], False, why))
        if pending:
            return sorted(results, key=lambda r: r.change.name)  # no sweeps while changes are in flight
    for name in plan.orphan_networks:
        try:
            engine.remove_network(name)
        except EngineError:
            pass  # still in use or already gone: the next pass retries
    for name in plan.orphan_volumes:
        try:
            engine.remove_volume(name)
        except EngineError:
            pass
    results.sort(key=lambda r: r.change.name)
    return results
