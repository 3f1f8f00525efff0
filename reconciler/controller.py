"""One reconcile pass: load -> observe -> plan -> route off -> execute -> observe
-> wait ready -> route on. ``reconcile plan``, ``apply`` and the watch loop all
run through here, so what plan shows is what apply does."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from .engine import Engine
from .execute import ChangeResult, execute
from .loader import Desired, LoadCache, load_specs
from .observed import Observed
from .plan import Plan, compute_plan
from .probe import ready_set
from .settings import Settings
from .traefik import Route, RouterOptions, publish, routes_for


@dataclass
class Context:
    settings: Settings
    engine: Engine
    cache: LoadCache = field(default_factory=LoadCache)

    @property
    def router_options(self) -> RouterOptions:
        s = self.settings
        return RouterOptions(domain=s.domain, entrypoint=s.entrypoint, tls_resolver=s.tls_resolver)


@dataclass(frozen=True)
class PassResult:
    desired: Desired
    plan: Plan
    results: tuple[ChangeResult, ...]
    observed: Observed
    routes: tuple[Route, ...]
    not_ready: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.plan.problems and all(r.ok for r in self.results) and not self.not_ready


def images_of(desired: Desired) -> set[str]:
    return {loaded.spec.spec.image for loaded in desired.specs.values()}


def make_plan(ctx: Context, only: set[str] | None = None) -> tuple[Desired, Observed, Plan]:
    """Load, observe and plan; ``only`` narrows the plan to those sandboxes."""
    desired = load_specs(ctx.settings.specs, ctx.cache)
    observed = ctx.engine.observe(images_of(desired))
    plan = compute_plan(desired, observed)
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
    )


def publish_routes(ctx: Context, observed: Observed, ready: set[str]) -> list[Route]:
    sandboxes = [sb for sb in observed.sandboxes.values() if sb.name in ready]
    routes = routes_for(sandboxes, ctx.settings.instance, ctx.settings.domain)
    publish(ctx.settings.traefik_dir, routes, ctx.settings.instance, ctx.router_options)
    return routes


def wait_ready(
    ctx: Context, names: set[str], deadline: float, desired: Desired
) -> tuple[Observed, set[str]]:
    """Observe until every sandbox in ``names`` answers, or the deadline passes."""
    while True:
        observed = ctx.engine.observe(images_of(desired))
        ready = ready_set(observed.sandboxes.values())
        missing = {n for n in names if n not in ready}
        if not missing or time.monotonic() >= deadline:
            return observed, ready
        time.sleep(0.05)


def apply_once(
    ctx: Context,
    on_result: Callable[[ChangeResult], None] | None = None,
    wait: bool = True,
    only: set[str] | None = None,
) -> PassResult:
    """Converge once: carry out the plan and publish routes for what is ready.

    ``only``: converge just those sandboxes (the agent API's one-sandbox apply)."""
    desired, observed, plan = make_plan(ctx, only)
    touched = {c.name for c in plan.changes if c.action in ("destroy", "recreate")}
    # Routes go before containers do: Traefik never forwards to a stopping sandbox.
    if touched:
        still = ready_set(sb for sb in observed.sandboxes.values() if sb.name not in touched)
        publish_routes(ctx, observed, still)
    results = execute(plan, ctx.engine, workers=ctx.settings.workers, on_result=on_result)
    started = {
        r.change.name
        for r in results
        if r.ok and r.change.action in ("create", "recreate", "start") and r.change.desired
        and r.change.desired.spec.port
    }
    deadline = time.monotonic() + (ctx.settings.ready_timeout if wait else 0)
    observed, ready = wait_ready(ctx, started, deadline, desired)
    routes = publish_routes(ctx, observed, ready)
    not_ready = tuple(sorted(started - ready)) if wait else ()
    return PassResult(desired, plan, tuple(results), observed, tuple(routes), not_ready)
