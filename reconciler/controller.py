"""One reconcile pass: load -> observe -> plan -> route off -> execute -> observe
-> wait ready -> route on. ``reconcile plan``, ``apply``, ``gc`` and the watch
loop all run through here, so what plan shows is what apply does.

A pass also keeps the books: lifetimes (TTL), crash restarts and their
backoff, and, through ``record_pass``, status conditions and the events log.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Mapping

from . import backoff
from .backoff import RestartRecord
from .engine import Engine
from .execute import ChangeResult, execute
from .lifetime import Lifetime, iso
from .loader import Desired, LoadCache, load_specs
from .observed import Observed, ObservedSandbox
from .plan import Change, Plan, compute_plan
from .probe import ReadyCache
from .settings import Settings
from .traefik import Route, RouterOptions, publish, routes_for

if TYPE_CHECKING:
    from .pool_worker import PoolResult
    from .pools import PoolChange
    from .state import StateStore
    from .status import LoopEvent


@dataclass
class Context:
    settings: Settings
    engine: Engine
    cache: LoadCache = field(default_factory=LoadCache)
    ready: ReadyCache = field(default_factory=ReadyCache)  # a loop's passes probe each container once

    @property
    def router_options(self) -> RouterOptions:
        s = self.settings
        return RouterOptions(domain=s.domain, entrypoint=s.entrypoint, tls_resolver=s.tls_resolver)


@dataclass(frozen=True)
class PassInput:
    """What a pass needs besides the specs and the engine."""

    now: float  # unix seconds
    lifetimes: Mapping[str, Lifetime] = field(default_factory=dict)  # as stored
    restarts: Mapping[str, RestartRecord] = field(default_factory=dict)  # as stored
    # Container ids stopped or killed from outside (Docker kill/stop events):
    # their exit is not a crash, they are started again at once.
    stopped_outside: frozenset[str] = frozenset()
    oom_killed: frozenset[str] = frozenset()  # container ids with an oom event
    # Container ids whose die event came after their last start: Docker's list
    # may show them "running" for ~0.1 s more, so they are not Ready.
    died: frozenset[str] = frozenset()
    backoff: bool = True  # False: start exited sandboxes at once (``reconcile apply``)
    wait: float = 0.0  # seconds to wait for started sandboxes to answer
    only: frozenset[str] | None = None
    destroy_only: bool = False  # ``reconcile gc``: expiries and orphans, nothing created
    cancel: threading.Event | None = None  # set: stop as soon as possible
    announce_ready: bool = False  # a "ready" event for every ready sandbox (a watch's first pass)
    # Warm pools: who starts and removes idle members once the routes are out (the
    # watch's background filler; None: this pass, at its end), and the member
    # container ids that runner is busy removing (never claimed meanwhile).
    pool_runner: Callable[[tuple[PoolChange, ...]], bool] | None = None
    pool_busy: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PassResult:
    desired: Desired
    plan: Plan
    results: tuple[ChangeResult, ...]
    observed: Observed
    routes: tuple[Route, ...]
    not_ready: tuple[str, ...] = ()
    ready: frozenset[str] = frozenset()  # sandboxes that answered (those with a port are routed)
    restarts: Mapping[str, RestartRecord] = field(default_factory=dict)  # to store
    crashed: tuple[str, ...] = ()  # sandboxes whose crash this pass noticed
    pool_results: tuple[PoolResult, ...] = ()  # pool changes this pass carried out itself

    @property
    def ok(self) -> bool:
        return not self.plan.problems and all(r.ok for r in self.results) and not self.not_ready


def images_of(desired: Desired) -> set[str]:
    return {loaded.spec.spec.image for loaded in [*desired.specs.values(), *desired.pools.values()]}


def make_plan(ctx: Context, only: set[str] | None = None) -> tuple[Desired, Observed, Plan]:
    """Load, observe and plan (TTLs included); ``only`` narrows the plan to those sandboxes."""
    from .state import read_lifetimes

    desired = load_specs(ctx.settings.specs, ctx.cache)
    observed = ctx.engine.observe(images_of(desired))
    plan = compute_plan(desired, observed, read_lifetimes(ctx.settings), time.time())
    if only is not None:
        plan = narrow(plan, only)
    return desired, observed, plan


def narrow(plan: Plan, only: set[str]) -> Plan:
    """The part of ``plan`` that concerns ``only`` (orphan sweeps left out)."""
    return replace(
        plan,
        changes=tuple(c for c in plan.changes if c.name in only),
        problems=tuple(p for p in plan.problems if p.name in only),
        kept=tuple(k for k in plan.kept if k in only),
        unchanged=tuple(u for u in plan.unchanged if u in only),
        orphan_networks=(),
        orphan_volumes=(),
        expired=tuple(n for n in plan.expired if n in only),
        held=tuple(h for h in plan.held if h[0] in only),
        pool_changes=(),  # refills are the loop's (or a whole apply's) business
    )


def publish_routes(ctx: Context, observed: Observed, ready: set[str]) -> list[Route]:
    sandboxes = [sb for sb in observed.sandboxes.values() if sb.name in ready]
    routes = routes_for(sandboxes, ctx.settings.instance, ctx.settings.domain)
    publish(ctx.settings.traefik_dir, routes, ctx.settings.instance, ctx.router_options)
    return routes


def wait_ready(
    ctx: Context,
    names: set[str],
    deadline: float,
    desired: Desired,
    cancel: threading.Event | None = None,
) -> tuple[Observed, set[str]]:
    """Observe until every sandbox in ``names`` answers, or the deadline passes."""
    while True:
        observed = ctx.engine.observe(images_of(desired))
        ready = ctx.ready.ready_set(observed.sandboxes.values())
        missing = {n for n in names if n not in ready}
        if not missing or time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
            return observed, ready
        time.sleep(0.05)


def reconcile_pass(
    ctx: Context, inp: PassInput, on_result: Callable[[ChangeResult], None] | None = None
) -> PassResult:
    """One level-triggered pass: read the world afresh and converge it."""
    desired = load_specs(ctx.settings.specs, ctx.cache)
    observed = ctx.engine.observe(images_of(desired))
    restarts, hold, crashed = crash_bookkeeping(ctx.engine, desired, observed, inp)
    plan = compute_plan(desired, observed, inp.lifetimes, inp.now, hold, inp.pool_busy)
    if inp.only is not None:
        plan = narrow(plan, set(inp.only))
    if inp.destroy_only:
        plan = replace(
            plan,
            changes=tuple(c for c in plan.changes if c.action == "destroy"),
            pool_changes=tuple(c for c in plan.pool_changes if c.action == "destroy"),
        )
    touched = {c.name for c in plan.changes if c.action in ("destroy", "recreate")}
    # Routes go before containers do: Traefik never forwards to a stopping sandbox.
    # Before a create or start too: a sandbox removed or stopped from outside still
    # has its route, and Traefik would hold requests on the dead address until a
    # TCP retry (~1 s, the drift-repair figure in bench/) instead of a quick 404.
    if plan.changes:
        still = ctx.ready.ready_set(sb for sb in observed.sandboxes.values() if sb.name not in touched)
        publish_routes(ctx, observed, still)
    born = {name: int(life.born_at) for name, life in plan.lifetimes.items()}
    results = execute(
        plan,
        ctx.engine,
        created_at=lambda change: born.get(change.name, int(inp.now)),
        workers=ctx.settings.workers,
        on_result=on_result,
        cancel=inp.cancel,
    )
    for r in results:
        if r.ok and r.change.desired is not None and r.change.action in ("create", "recreate", "start"):
            name = r.change.name
            restarts[name] = backoff.on_started(restarts.get(name), r.change.desired.config_hash, inp.now)
    started = {
        r.change.name
        for r in results
        if r.ok and r.change.action in ("create", "recreate", "start") and r.change.desired
        and r.change.desired.spec.port
    }
    if results or plan.has_changes:
        deadline = time.monotonic() + inp.wait
        observed, ready = wait_ready(ctx, started, deadline, desired, inp.cancel)
    else:
        # Nothing was changed: the first observation still holds (a no-op pass lists Docker once).
        ready = ctx.ready.ready_set(observed.sandboxes.values())
    routes = publish_routes(ctx, observed, ready)
    not_ready = tuple(sorted(started - ready)) if inp.wait else ()
    pool_results: tuple[PoolResult, ...] = ()
    # Last: a claimed sandbox is routed before its pool is topped up.
    if plan.pool_changes and not (inp.cancel is not None and inp.cancel.is_set()):
        if inp.pool_runner is not None:
            inp.pool_runner(plan.pool_changes)
        else:
            from .pool_worker import run_pool_changes

            pool_results = tuple(run_pool_changes(ctx.engine, plan.pool_changes, int(inp.now)))
    return PassResult(
        desired, plan, tuple(results), observed, tuple(routes), not_ready,
        frozenset(ready), restarts, tuple(crashed), pool_results,
    )


def crash_bookkeeping(
    engine: Engine, desired: Desired, observed: Observed, inp: PassInput
) -> tuple[dict[str, RestartRecord], dict[str, str], list[str]]:
    """Crash records after this observation, the restarts to hold back (name ->
    why), and the sandboxes whose crash is new (their last log lines are read)."""
    records = dict(inp.restarts)
    hold: dict[str, str] = {}
    crashed: list[str] = []
    for name, have in sorted(observed.sandboxes.items()):
        prev = records.get(name)
        if name not in desired.specs:
            continue
        if have.state == "exited" and have.container_id in inp.stopped_outside:
            if prev is not None and prev.retry_at is not None:
                records[name] = replace(prev, retry_at=None)  # not a crash after all
            continue
        if have.state == "exited" and inp.backoff:
            oom = have.container_id in inp.oom_killed
            rec = backoff.on_crash(prev, have.config_hash, have.exit_code, oom, "", inp.now)
            if rec is not prev:
                rec = replace(rec, logs=last_log_lines(engine, have))
                crashed.append(name)
            records[name] = rec
            if rec.waiting(inp.now):
                hold[name] = crash_message(rec, inp.now)
        elif have.running and prev is not None and backoff.settled(prev, inp.now):
            del records[name]
    if desired.complete and not desired.errors:
        for name in list(records):
            if name not in desired.specs:
                del records[name]
    return records, hold, crashed


def crash_message(rec: RestartRecord, now: float) -> str:
    """``CrashLoop: exited with code 1; restart #3 at 2026-...Z (backoff 4s)``, for plan lines and status."""
    code = "unknown code" if rec.exit_code is None else f"code {rec.exit_code}"
    cause = " (out of memory)" if rec.oom else ""
    when = "now"
    if rec.retry_at is not None and rec.crashed_at is not None:
        when = f"at {iso(rec.retry_at)} (backoff {rec.retry_at - rec.crashed_at:.0f}s)"
    return f"CrashLoop: exited with {code}{cause}; restart #{rec.restarts} {when}"


def last_log_lines(engine: Engine, have: ObservedSandbox, lines: int = 5, limit: int = 2000) -> str:
    """The tail of a container's output, for a crash message ("" if unreadable)."""
    try:
        text = b"".join(engine.logs(have, tail=lines)).decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - logs are a courtesy; the crash is reported anyway
        return ""
    return text.strip()[-limit:]


def apply_once(
    ctx: Context,
    on_result: Callable[[ChangeResult], None] | None = None,
    wait: bool = True,
    only: set[str] | None = None,
) -> PassResult:
    """Converge once: carry out the plan and publish routes for what is ready.
    TTLs are honoured; exited sandboxes are started at once (no backoff).

    ``only``: converge just those sandboxes (the agent API's one-sandbox apply)."""
    from .state import open_store

    with open_store(ctx.settings) as store:
        inp = PassInput(
            now=time.time(),
            lifetimes=store.lifetimes(),
            restarts=store.restarts(),
            backoff=False,
            wait=ctx.settings.ready_timeout if wait else 0.0,
            only=frozenset(only) if only is not None else None,
        )
        result = reconcile_pass(ctx, inp, on_result)
        record_pass(ctx, store, inp, result)
    return result


def destroy_sandboxes(
    ctx: Context, names: list[str] | None, remove_volumes: bool = False
) -> tuple[list[str], list[ChangeResult]]:
    """``reconcile destroy``: remove the named sandboxes (``None``: all of them) through
    the executor, routes first; spec files stay. Returns (unknown names, results);
    with an unknown name nothing is destroyed."""
    observed = ctx.engine.observe()
    targets = sorted(observed.sandboxes) if names is None else list(dict.fromkeys(names))
    missing = [n for n in targets if n not in observed.sandboxes]
    if missing:
        return missing, []  # one unknown name: touch nothing
    changes = [
        Change("destroy", n, "destroy requested", observed=observed.sandboxes[n], remove_volumes=remove_volumes)
        for n in targets
    ]
    everything = names is None
    if everything:
        changes += [Change("destroy", s.name or s.container_name, "duplicate container", observed=s) for s in observed.strays]
    kept = {sb.name for sb in observed.sandboxes.values()} - set(targets)
    plan = Plan(
        changes=tuple(changes),
        # With --all, networks and volumes left without a sandbox go too (volumes only when asked).
        orphan_networks=tuple(n for n, net in observed.networks.items() if everything and net.sandbox not in kept),
        orphan_volumes=tuple(
            v for v, vol in observed.volumes.items() if everything and remove_volumes and vol.sandbox not in kept
        ),
    )
    # Routes go before containers do, as in every pass.
    publish_routes(ctx, observed, ctx.ready.ready_set(sb for sb in observed.sandboxes.values() if sb.name in kept))
    return missing, execute(plan, ctx.engine, workers=ctx.settings.workers)


def gc_once(ctx: Context) -> PassResult:
    """``reconcile gc``: destroy expired sandboxes and orphans; create and start nothing."""
    from .state import open_store

    with open_store(ctx.settings) as store:
        inp = PassInput(
            now=time.time(), lifetimes=store.lifetimes(), restarts=store.restarts(), backoff=False,
            destroy_only=True,
        )
        result = reconcile_pass(ctx, inp)
        record_pass(ctx, store, inp, result)
    return result


def record_pass(ctx: Context, store: StateStore, inp: PassInput, result: PassResult) -> list[LoopEvent]:
    """Keep the books of a pass: lifetimes, crash records, status conditions and
    the events log. Returns the events (``status.LoopEvent``) it logged."""
    from .status import derive

    lifetimes = dict(result.plan.lifetimes)
    if inp.only is not None or inp.destroy_only:
        # A partial pass touches only its own sandboxes' lifetimes (gc: only the expired).
        keep = set(inp.only or ()) | set(result.plan.expired)
        lifetimes = {**inp.lifetimes, **{n: life for n, life in lifetimes.items() if n in keep}}
    previous = store.statuses()
    statuses, events = derive(result, inp, previous, ctx.settings)
    if result.pool_results:
        from .pool_worker import pool_events

        events.extend(pool_events(result.pool_results, inp.now))
    store.save(
        lifetimes=(lifetimes, inp.lifetimes),
        restarts=(dict(result.restarts), inp.restarts),
        statuses=(statuses, previous),
        events=events,
    )
    return events
