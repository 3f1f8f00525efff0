"""The control loop behind ``reconcile watch`` (and ``reconcile up``).

Level-triggered, as controller-runtime: a trigger only says "look again".
Triggers are a settled write in the specs directory, a Docker event of an
owned container, the resync tick, the nearest TTL expiry, the nearest
crash-loop restart, a re-probe of a sandbox not answering yet, the retry of a
failed change, and a wake-up from ``extend``. Each runs one full pass
(``controller.reconcile_pass``) from a fresh observation; triggers that pile
up during a pass are merged into the next one.

Threads: this one runs the passes; one waits on the file watcher, one follows
Docker events (reopening the stream with ``since`` when the daemon goes away),
one turns ``stop`` into a wake-up. Stopping leaves the sandboxes running.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from watchfiles._rust_notify import RustNotify  # the documented backend of watchfiles.watch

from . import backoff
from .controller import Context, PassInput, PassResult, record_pass, reconcile_pass
from .engine import Engine, EngineError, EventStream
from .errors import NotFound, UserError
from .lifetime import extended, iso
from .loader import is_spec_file, load_specs
from .plan import compute_plan
from .lock import hold_watch_lock, watch_running
from .pool_worker import PoolFiller, pool_events
from .settings import Settings
from .state import StateStore, open_store
from .status import LoopEvent, crash_restarted

__all__ = ["LoopEvent", "run_watch", "extend", "relevant_change", "next_wake"]

# A write counts once nothing more changed for STEP_MS; a storm of changes is cut
# at DEBOUNCE_MS. watchfiles answers STEP_MS..2*STEP_MS after the first event
# (measured: 78 ms median at 50, 30 at 20, 15 at 10), but every step wakes the
# process, ~70 us each here (idle 0.18 % of a core at 50, 0.43 % at 20, 0.73 % at
# 10): 20 keeps both the pool's 150 ms and the idle 1 % with room. A longer step
# buys no safety against a slow writer (watchfiles' set of changes does not grow
# while one file keeps being written): a half-written spec is refused and changes
# nothing, and the end of the write starts the next pass (test_watch.py, "two chunks").
STEP_MS = 20
DEBOUNCE_MS = 1000
IN_PASS_WAIT = 1.0  # seconds a pass waits for what it started to answer, then re-probes
PROBE_FIRST, PROBE_MAX = 0.1, 5.0  # re-probe delays of a sandbox not answering yet
RETRY_FIRST, RETRY_MAX = 0.5, 60.0  # after a failed pass or a failed change
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0  # reopening the Docker event stream
STOPPED_OUTSIDE_KEPT = 600.0  # seconds a kill/stop/die event is remembered
STALE_RECHECK = 0.05  # Docker's list lags its die event by ~0.1 s
PRUNE_EVERY = 3600.0  # seconds between trims of the events log
UP_RECHECK = 2.0  # seconds after a crash restart: still up, it is Ready
# Docker events that mean "look again" (kill and start only update the books).
TRIGGERING_ACTIONS = frozenset({"create", "die", "oom", "stop", "destroy", "pause", "unpause"})
_BACKUP_SUFFIXES = ("~", ".swp", ".swo", ".swx", ".tmp", ".bak", ".orig", ".part", ".crdownload")

OnEvent = Callable[[LoopEvent], None]
OnPass = Callable[[PassResult, float], None]  # a finished pass and its wall time in seconds (metrics)


def relevant_change(path: str, specs_dir: Path) -> bool:
    """Whether a changed ``path`` can change the desired state: a spec file at
    the top of ``specs_dir``, or a file below it that an upload may read. Dotfiles,
    dot-directories and editor temp/backup files never count."""
    try:
        rel = Path(path).relative_to(specs_dir)
    except ValueError:
        return False
    parts = rel.parts
    if not parts:
        return True  # the directory itself (created, removed, replaced)
    if any(p.startswith(".") for p in parts) or "__pycache__" in parts:
        return False
    if len(parts) == 1:
        return is_spec_file(parts[0])
    return not parts[-1].endswith(_BACKUP_SUFFIXES) and not parts[-1].startswith(("#", "~"))


def wake_path(settings: Settings) -> Path:
    return settings.state_dir / f"{settings.instance}.wake"


def wake(settings: Settings) -> None:
    """Ask a running watch (of any process) for a pass now; a no-op without one."""
    path = wake_path(settings)
    if not watch_running(settings) or not path.exists():
        return
    try:
        with open(path, "w", encoding="ascii") as f:  # rewritten in place: the watcher sees a change
            f.write(f"{time.time():.6f}\n")
    except OSError:
        pass  # the watch will see the change at its next resync


def extend(settings: Settings, name: str, seconds: float, *, engine: Engine | None = None,
           now: float | None = None) -> float:
    """Push sandbox ``name``'s expiry by ``seconds``; returns the new expiry (unix seconds).

    An expired sandbox comes back (recreated by the next pass). Raises NotFound
    for an unknown sandbox and UserError for one without a ttl."""
    from .cli import make_engine  # the one engine factory

    if seconds <= 0:
        raise UserError(f"expected a positive duration, got {seconds:g}s")
    engine = engine or make_engine(settings)
    with open_store(settings) as store:
        for _attempt in range(5):
            when = time.time() if now is None else now
            stored = store.lifetimes()
            desired = load_specs(settings.specs)
            if name not in desired.specs:
                if name in stored and name in desired.protected_names:
                    raise UserError(f'the spec of "{name}" is invalid; fix it first (`reconcile validate`)')
                raise NotFound(f'no valid spec for sandbox "{name}" in {settings.specs}')
            images = {loaded.spec.spec.image for loaded in desired.specs.values()}
            plan = compute_plan(desired, engine.observe(images), stored, when)
            life = plan.lifetimes.get(name)
            if life is None or life.expires_at is None:
                raise UserError(f'sandbox "{name}" has no ttl in its spec, so it never expires; nothing to extend')
            longer = extended(life, seconds, when)
            if store.replace_lifetime(name, stored.get(name), longer):
                assert longer.expires_at is not None
                store.add_events([LoopEvent("extended", name, f"expiry pushed to {iso(longer.expires_at)}", None, when)])
                wake(settings)
                return longer.expires_at
        raise UserError(f'sandbox "{name}": its lifetime kept changing under us; try again')


# --- the loop ----------------------------------------------------------------------


@dataclass
class _EngineBook:
    """What the Docker events thread learned, for the next pass (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped_outside: dict[str, float] = field(default_factory=dict)  # container id -> when
    oom_killed: dict[str, float] = field(default_factory=dict)
    # Died since their last start: Docker's list shows such a container "running"
    # for ~0.1 s after its die event, so a pass that sees one looks again soon.
    died: dict[str, float] = field(default_factory=dict)
    stream: EventStream | None = None
    connected: threading.Event = field(default_factory=threading.Event)

    def note(self, action: str, container_id: str, when: float) -> None:
        with self.lock:
            if action in ("kill", "stop"):
                self.stopped_outside[container_id] = when
            elif action == "oom":
                self.oom_killed[container_id] = when
            elif action == "die":
                self.died[container_id] = when
            elif action in ("start", "destroy"):
                # Started again (by us): its next exit is judged afresh.
                for book in (self.stopped_outside, self.oom_killed, self.died):
                    book.pop(container_id, None)

    def snapshot(self, now: float) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
        """(stopped from outside, oom-killed, died since their last start) container ids."""
        with self.lock:
            for book in (self.stopped_outside, self.oom_killed, self.died):
                for cid in [c for c, t in book.items() if now - t > STOPPED_OUTSIDE_KEPT]:
                    del book[cid]
            return frozenset(self.stopped_outside), frozenset(self.oom_killed), frozenset(self.died)

    def stale(self, result: PassResult) -> bool:
        """True when the pass saw "running" a container whose death was already announced."""
        with self.lock:
            return any(sb.running and sb.container_id in self.died for sb in result.observed.sandboxes.values())


@dataclass
class _Timers:
    """In-memory retry state of the loop (the durable part is in the store)."""

    passes: int = 0  # completed ones
    failed_passes: int = 0
    last_error: str | None = None
    probe_delay: float = PROBE_FIRST
    unready: frozenset[str] = frozenset()
    change_failures: dict[str, int] = field(default_factory=dict)


def run_watch(
    ctx: Context,
    stop: threading.Event,
    *,
    resync_interval: float = 30.0,
    on_event: OnEvent | None = None,
    on_pass: OnPass | None = None,
) -> None:
    """Keep Docker and Traefik equal to the specs until ``stop`` is set.

    Raises ``lock.WatchLocked`` when another watch holds this instance and state
    dir. ``on_event`` is called from the loop's thread for every event,
    ``on_pass`` after every pass that completed."""
    settings = ctx.settings
    with hold_watch_lock(settings), open_store(settings) as store:
        triggers: queue.SimpleQueue[str] = queue.SimpleQueue()
        book = _EngineBook()
        armed = threading.Event()
        wake_file = Path(os.path.abspath(wake_path(settings)))
        wake_file.touch(exist_ok=True)
        specs_dir = Path(os.path.abspath(settings.specs))
        threads = [
            threading.Thread(target=lambda: (stop.wait(), triggers.put("stop")), name="watch-stop", daemon=True),
            threading.Thread(
                target=_watch_files, args=(specs_dir, wake_file, triggers, stop, armed),
                name="watch-files", daemon=True,
            ),
            threading.Thread(target=_follow_engine, args=(ctx, triggers, stop, book), name="watch-docker", daemon=True),
        ]
        for thread in threads:
            thread.start()
        # Arm both watchers before the first pass: nothing written after it is missed.
        _wait_unless_stopped((armed, book.connected), stop, timeout=5.0)
        emit = _emitter(store, on_event)
        emit([LoopEvent("watching", None, f"watching {settings.specs} (instance {settings.instance}, "
                                          f"resync {resync_interval:g}s)")])
        timers = _Timers()
        # Warm pools are topped up in the background; a finished batch asks for a pass.
        filler = PoolFiller(ctx.engine, lambda results: (emit(pool_events(results, time.time())), triggers.put("pool")))
        try:
            _run_passes(ctx, store, stop, triggers, book, timers, resync_interval, emit, on_pass, filler)
        finally:
            stop.set()
            filler.stop()
            with book.lock:
                stream = book.stream
            if stream is not None:
                stream.close()
            for thread in threads:
                thread.join(timeout=2.0)
            emit([LoopEvent("stopped", None, "watch stopped; sandboxes keep running")])


def _wait_unless_stopped(events: tuple[threading.Event, ...], stop: threading.Event, timeout: float) -> None:
    """Wait for every event in ``events``, but give up at once when ``stop`` is set."""
    deadline = time.monotonic() + timeout
    for event in events:
        while not event.is_set() and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            event.wait(min(0.05, left))


def _run_passes(
    ctx: Context,
    store: StateStore,
    stop: threading.Event,
    triggers: queue.SimpleQueue[str],
    book: _EngineBook,
    timers: _Timers,
    resync_interval: float,
    emit: Callable[..., None],
    on_pass: OnPass | None = None,
    filler: PoolFiller | None = None,
) -> None:
    pruned = -PRUNE_EVERY  # at once, then hourly
    while not stop.is_set():
        started = time.monotonic()
        if started - pruned > PRUNE_EVERY:
            try:
                store.prune()
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the loop
                print(f"reconcile: cannot trim the events log: {exc}", file=sys.stderr)
            pruned = started
        delay = _one_pass(ctx, store, stop, book, timers, emit, on_pass, filler)
        next_at = min(started + resync_interval, time.monotonic() + delay if delay is not None else float("inf"))
        try:
            reason = triggers.get(timeout=max(0.0, next_at - time.monotonic()))
        except queue.Empty:
            reason = "timer"
        while reason != "stop":  # merge whatever else piled up
            try:
                reason = triggers.get_nowait()
            except queue.Empty:
                break
        if reason == "stop":
            return


def _one_pass(
    ctx: Context,
    store: StateStore,
    stop: threading.Event,
    book: _EngineBook,
    timers: _Timers,
    emit: Callable[..., None],
    on_pass: OnPass | None = None,
    filler: PoolFiller | None = None,
) -> float | None:
    """Run one pass and log it; returns seconds until the next timed wake-up (None: the resync)."""
    now = time.time()
    began = time.monotonic()
    stopped_outside, oom_killed, died = book.snapshot(now)
    try:
        inp = PassInput(
            now=now,
            lifetimes=store.lifetimes(),
            restarts=store.restarts(),
            stopped_outside=stopped_outside,
            oom_killed=oom_killed,
            died=died,
            backoff=True,
            wait=IN_PASS_WAIT,
            cancel=stop,
            announce_ready=timers.passes == 0,
            pool_runner=filler.submit if filler is not None else None,
            pool_busy=filler.busy() if filler is not None else frozenset(),
        )
        result = reconcile_pass(ctx, inp)
        events = record_pass(ctx, store, inp, result)
    except Exception as exc:  # noqa: BLE001 - the loop outlives any one pass
        timers.failed_passes += 1
        message = f"reconcile pass failed: {type(exc).__name__}: {exc}" if not isinstance(exc, EngineError) else (
            f"reconcile pass failed: {exc}"
        )
        if message != timers.last_error:  # one line per outage, not one per retry
            emit([LoopEvent("error", None, message)])
            timers.last_error = message
        return backoff.delay(timers.failed_passes, RETRY_FIRST, RETRY_MAX)
    timers.failed_passes = 0
    timers.last_error = None
    timers.passes += 1
    emit(events, log=False)  # record_pass logged them
    if on_pass is not None:
        try:
            on_pass(result, time.monotonic() - began)
        except Exception as exc:  # noqa: BLE001 - a caller's bug must not stop the loop
            print(f"reconcile: on_pass callback failed: {exc}", file=sys.stderr)
    wake = next_wake(result, inp, timers, time.time())
    if book.stale(result):
        wake = min(wake if wake is not None else STALE_RECHECK, STALE_RECHECK)
    return wake


def next_wake(result: PassResult, inp: PassInput, timers: _Timers, now: float) -> float | None:
    """Seconds until the earliest timed trigger after ``result``: a TTL expiry, a
    crash-loop restart, a re-probe or a change retry (None: just the resync)."""
    deadlines: list[float] = []
    for life in result.plan.lifetimes.values():
        if life.expires_at is not None and not life.is_expired(now):
            deadlines.append(life.expires_at - now)
    for name, _why in result.plan.held:
        rec = result.restarts.get(name)
        if rec is not None and rec.retry_at is not None:
            deadlines.append(rec.retry_at - now)
    # Running sandboxes with a port that do not answer yet: probe again soon, then less often.
    unready = frozenset(
        sb.name for sb in result.observed.sandboxes.values()
        if sb.running and sb.port and sb.name not in result.ready and sb.name in result.desired.specs
    )
    if unready:
        timers.probe_delay = PROBE_FIRST if unready != timers.unready else min(timers.probe_delay * 2, PROBE_MAX)
        deadlines.append(timers.probe_delay)
    timers.unready = unready
    if crash_restarted(result, inp):
        deadlines.append(UP_RECHECK)  # Ready only if it is still up then
    failed = {r.change.name for r in result.results if not r.ok}
    for name in list(timers.change_failures):
        if name not in failed:
            del timers.change_failures[name]
    for r in result.results:
        if not r.ok and not r.permanent:
            count = timers.change_failures.get(r.change.name, 0) + 1
            timers.change_failures[r.change.name] = count
            deadlines.append(backoff.delay(count, RETRY_FIRST, RETRY_MAX))
    return max(0.0, min(deadlines)) if deadlines else None


def _emitter(store: StateStore, on_event: OnEvent | None) -> Callable[..., None]:
    """``emit(events, log=True)``: log events of the loop itself and pass every event to ``on_event``."""

    def emit(events: list[LoopEvent], log: bool = True) -> None:
        if log and events:
            try:
                store.add_events(events)
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop the loop
                print(f"reconcile: cannot log events: {exc}", file=sys.stderr)
        for event in events:
            if on_event is not None:
                try:
                    on_event(event)
                except Exception as exc:  # noqa: BLE001 - a caller's bug must not stop the loop
                    print(f"reconcile: on_event callback failed: {exc}", file=sys.stderr)

    return emit


# --- the file watcher --------------------------------------------------------------


def _watch_files(
    specs_dir: Path,
    wake_file: Path,
    triggers: queue.SimpleQueue[str],
    stop: threading.Event,
    armed: threading.Event,
) -> None:
    """Put "files" on ``triggers`` for every settled, relevant change."""
    polling = os.environ.get("WATCHFILES_FORCE_POLLING", "").lower() not in ("", "0", "false", "disable", "disabled")
    missing = False
    while not stop.is_set():
        try:
            notify = RustNotify([str(specs_dir), str(wake_file)], False, polling, 300, True, False)
        except (OSError, RuntimeError):
            # No specs directory (yet): the pass reports it; look again shortly.
            missing = True
            armed.set()
            if stop.wait(1.0):
                return
            continue
        armed.set()
        if missing:
            triggers.put("files")  # the directory appeared
            missing = False
        inode = _inode(specs_dir)
        try:
            while not stop.is_set():
                raw = notify.watch(DEBOUNCE_MS, STEP_MS, 5000, stop)
                if raw == "stop":
                    return
                if isinstance(raw, set) and any(
                    path == str(wake_file) or relevant_change(path, specs_dir) for _kind, path in raw
                ):
                    triggers.put("files")
                if _inode(specs_dir) != inode:
                    break  # the directory went away or was replaced: watch the new one
        except Exception:  # noqa: BLE001 - a watcher failure must not end the loop: re-arm
            pass
        finally:
            notify.close()
        triggers.put("files")


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


# --- the Docker event follower -----------------------------------------------------


def _follow_engine(ctx: Context, triggers: queue.SimpleQueue[str], stop: threading.Event, book: _EngineBook) -> None:
    """Follow the engine's events; after the stream breaks (daemon restart), reopen
    it from where it ended and ask for a pass to catch up on what was missed."""
    since: float | None = None
    delay = RECONNECT_FIRST
    lost = False
    while not stop.is_set():
        opened_at = time.time()
        try:
            stream = ctx.engine.events(since=since)
        except Exception:  # noqa: BLE001 - EngineError or a broken client: retry later
            book.connected.set()  # the first pass need not wait for a dead engine
            lost = True
            if stop.wait(delay):
                return
            delay = min(delay * 2, RECONNECT_MAX)
            continue
        with book.lock:
            book.stream = stream
        if stop.is_set():
            stream.close()
            return
        book.connected.set()
        delay = RECONNECT_FIRST
        if lost:
            triggers.put("engine")  # back after an outage: converge from a fresh look
            lost = False
        since = opened_at - 1.0  # an event-less stream still resumes from about here
        try:
            for event in stream:
                since = event.time
                book.note(event.action, event.container_id, event.time)
                if event.action in TRIGGERING_ACTIONS:
                    triggers.put("engine")
        except Exception:  # noqa: BLE001 - a broken stream is reopened below
            pass
        with book.lock:
            book.stream = None
        lost = True
        if stop.wait(RECONNECT_FIRST):
            return
