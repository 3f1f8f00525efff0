"""The planner: desired + observed -> Plan. Pure: no engine, no clock, no I/O.

Terraform's vocabulary: ``+`` create, ``-/+`` recreate (with the cause),
``~`` start, ``-`` destroy. Invalid specs are never a reason to destroy: their
sandboxes are *kept* exactly as they run and reported.

Given ``now`` (and the stored lifetimes), the plan also enforces TTLs: an
expired sandbox is destroyed and not recreated while its spec is unchanged.
Given ``hold``, exited sandboxes waiting out a crash-loop backoff are not started.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Mapping

from . import lifetime as lt
from .container_config import DesiredSandbox, changed_fields, desired_sandbox
from .errors import SpecError
from .lifetime import Lifetime
from .loader import Desired
from .observed import Observed, ObservedMember, ObservedSandbox

if TYPE_CHECKING:
    from .pools import PoolChange, PoolSize

Action = Literal["create", "recreate", "start", "destroy"]
SYMBOLS: dict[str, str] = {"create": "+", "recreate": "-/+", "start": "~", "destroy": "-"}


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    cause: str
    desired: DesiredSandbox | None = None
    observed: ObservedSandbox | None = None
    remove_volumes: bool = False  # only when the sandbox itself goes away
    claim: ObservedMember | None = None  # create/recreate: take this idle pool member (pools.py)

    def to_json(self) -> dict[str, Any]:
        out = {
            "action": self.action,
            "name": self.name,
            "cause": self.cause,
            "container_id": self.observed.container_id if self.observed else None,
            "config_hash": self.desired.config_hash if self.desired else None,
        }
        if self.claim is not None:
            out["claim"] = self.claim.container_id
        return out


@dataclass(frozen=True)
class Problem:
    """A sandbox the plan cannot converge, and why (left as it is)."""

    name: str | None
    message: str
    spec_error: SpecError | None = None

    def __str__(self) -> str:
        if self.spec_error is not None:
            return str(self.spec_error)
        return f"{self.name}: {self.message}"


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...] = ()
    problems: tuple[Problem, ...] = ()
    kept: tuple[str, ...] = ()  # running sandboxes left alone because their spec is invalid
    unchanged: tuple[str, ...] = ()
    desired: dict[str, DesiredSandbox] = field(default_factory=dict)
    orphan_networks: tuple[str, ...] = ()
    orphan_volumes: tuple[str, ...] = ()
    # TTL: each sandbox's lifetime as of this plan (to store), and the expired ones.
    lifetimes: dict[str, Lifetime] = field(default_factory=dict)
    expired: tuple[str, ...] = ()
    held: tuple[tuple[str, str], ...] = ()  # (name, why): exited, restart waits for its backoff
    # Warm pools: idle members to start and remove, and each pool's size as observed.
    pool_changes: tuple[PoolChange, ...] = ()
    pools: tuple[PoolSize, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.orphan_networks or self.orphan_volumes or self.pool_changes)

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to destroy), counted as Terraform does (a recreate is both)."""
        add = sum(c.action in ("create", "recreate") for c in self.changes)
        change = sum(c.action == "start" for c in self.changes)
        destroy = sum(c.action in ("destroy", "recreate") for c in self.changes)
        # Orphan networks and volumes are shown as "-" lines: the footer counts them too.
        destroy += len(self.orphan_networks) + len(self.orphan_volumes)
        return add, change, destroy


def compute_plan(
    desired: Desired,
    observed: Observed,
    lifetimes: Mapping[str, Lifetime] | None = None,
    now: float | None = None,
    hold: Mapping[str, str] | None = None,
    unavailable: frozenset[str] = frozenset(),
) -> Plan:
    """What it takes to make ``observed`` equal ``desired``.

    ``now``: enforce TTLs against the stored ``lifetimes`` (without it, no TTL
    logic at all). ``hold``: sandbox name -> why its restart must wait.
    ``unavailable``: pool member container ids a background refill is changing."""
    changes: list[Change] = []
    problems: list[Problem] = [Problem(None, e.message, e) for e in desired.errors]
    kept: list[str] = []
    unchanged: list[str] = []
    wanted: dict[str, DesiredSandbox] = {}
    stored = lifetimes or {}
    hold = hold or {}
    lives: dict[str, Lifetime] = {}
    expired: list[str] = []
    held: list[tuple[str, str]] = []

    for name, loaded in sorted(desired.specs.items()):
        have = observed.sandboxes.get(name)
        image_id = observed.images.get(loaded.spec.spec.image)
        want = desired_sandbox(loaded, observed.instance, image_id) if image_id is not None else None
        if now is not None:
            life = lt.resolve(loaded, want, have, stored.get(name), now)
            lives[name] = life
            if life.is_expired(now):
                if life.expired_at is None:
                    lives[name] = replace(life, expired_at=now)
                expired.append(name)
                if have is not None:
                    changes.append(_expire(name, life, have))
                continue
        if want is None:
            problems.append(
                Problem(
                    name,
                    f'image "{loaded.spec.spec.image}" is not present on the engine; '
                    "build or load it (no registry pull is attempted)",
                )
            )
            if have is not None:
                kept.append(name)
            continue
        wanted[name] = want
        if have is None:
            changes.append(Change("create", name, "new sandbox", want))
        elif have.config_hash != want.config_hash:
            changes.append(Change("recreate", name, _recreate_cause(have, want), want, have))
        elif have.state == "dead":
            changes.append(Change("recreate", name, "container is dead", want, have))
        elif have.state == "created":
            # Never left so on purpose (create uploads and starts, or removes): an
            # interrupted create, whose uploads may be missing.
            changes.append(Change("recreate", name, "interrupted create (never started)", want, have))
        elif have.state in ("exited", "paused") and name in hold:
            held.append((name, hold[name]))
        elif have.state in ("exited", "paused"):
            changes.append(Change("start", name, f"container is {have.state}", want, have))
        else:
            unchanged.append(name)

    protected = set(desired.protected_names)
    for name, have in sorted(observed.sandboxes.items()):
        if name in wanted or name in kept or name in expired:
            continue
        if name in protected or (have.spec_file or "") in desired.protected_files:
            # Its spec is invalid: left as it runs, but a lifetime still ends.
            life = stored.get(name) or lt.from_labels(have)
            if now is not None and life is not None and life.is_expired(now):
                changes.append(_expire(name, life, have))
                expired.append(name)
                if name in stored:
                    lives[name] = replace(life, expired_at=life.expired_at or now)
                continue
            kept.append(name)
            if name in stored:
                lives[name] = stored[name]  # kept as it is until the spec is fixed
            continue
        if name in desired.specs:
            continue  # its image is missing: reported above, left as it is
        if not desired.complete:
            kept.append(name)
            continue
        changes.append(Change("destroy", name, "no spec", observed=have, remove_volumes=True))
    for stray in observed.strays:
        changes.append(Change("destroy", stray.name or stray.container_name, "duplicate container", observed=stray))
    from .pools import plan_pools  # here: pools builds on this module's Change

    pooled = plan_pools(desired, observed, changes, now, unavailable)
    changes = list(pooled.changes)
    problems.extend(pooled.problems)

    if now is not None:
        # A record is dropped only when its spec is surely gone: never while a
        # spec file is unreadable (it may be that sandbox's, mid-write).
        certain = desired.complete and not desired.errors
        for name, life in stored.items():
            if name not in lives and (name in protected or not certain):
                lives[name] = life
    alive = (set(wanted) | set(kept) | set(desired.specs)) - set(expired)
    going = {c.name for c in changes if c.action == "destroy"}
    orphan_networks = tuple(
        sorted(n for n, net in observed.networks.items() if net.sandbox not in alive and net.sandbox not in going)
    )
    orphan_networks = tuple(sorted({*orphan_networks, *pooled.orphan_networks}))
    orphan_volumes = tuple(
        sorted(n for n, vol in observed.volumes.items() if vol.sandbox not in alive and vol.sandbox not in going)
    )
    order = {"destroy": 0, "recreate": 1, "create": 2, "start": 3}
    changes.sort(key=lambda c: (c.name, order[c.action]))
    return Plan(
        changes=tuple(changes),
        problems=tuple(problems),
        kept=tuple(sorted(kept)),
        unchanged=tuple(unchanged),
        desired=wanted,
        orphan_networks=orphan_networks,
        orphan_volumes=orphan_volumes,
        lifetimes=lives,
        expired=tuple(sorted(expired)),
        held=tuple(sorted(held)),
        pool_changes=pooled.pool_changes,
        pools=pooled.sizes,
    )


def _expire(name: str, life: Lifetime, have: ObservedSandbox) -> Change:
    assert life.expires_at is not None
    return Change("destroy", name, f"ttl expired {lt.iso(life.expires_at)}", observed=have, remove_volumes=True)


def is_expiry(change: Change) -> bool:
    return change.action == "destroy" and change.cause.startswith("ttl expired")


def _recreate_cause(have: ObservedSandbox, want: DesiredSandbox) -> str:
    fields = changed_fields(have.config, want.config)
    if fields:
        return ", ".join(f"spec.{f}" for f in fields) + " changed"
    if have.image_id and have.image_id != want.image_id:
        return f'image "{want.spec.image}" was rebuilt'
    return "config hash changed"


# --- output ------------------------------------------------------------------


def render_text(plan: Plan) -> str:
    """Terraform-style plan text, sorted by name, with the footer."""
    lines = []
    for change in plan.changes:
        lines.append(f"{SYMBOLS[change.action]:>3} {change.name} ({change.cause})")
    for net in plan.orphan_networks:
        lines.append(f"  - network {net} (orphan)")
    for vol in plan.orphan_volumes:
        lines.append(f"  - volume {vol} (orphan)")
    from .pools import footer, render_lines

    lines.extend(render_lines(plan.pool_changes))
    for name in plan.kept:
        lines.append(f"  ! {name} (left as it is: its spec is invalid or its image is missing)")
    gone = {c.name for c in plan.changes}
    for name in plan.expired:
        life = plan.lifetimes.get(name)
        if name not in gone and life is not None and life.expires_at is not None:
            lines.append(
                f"  ! {name} (ttl expired {lt.iso(life.expires_at)}: not recreated until its spec "
                "changes or `reconcile extend` gives it more time)"
            )
    for name, why in plan.held:
        lines.append(f"  ! {name} (restart held: {why})")
    for problem in plan.problems:
        lines.append(f"error: {problem}")
    if not plan.has_changes:
        lines.append("No changes. Sandboxes match the specs.")
    pools_line = footer(plan.pool_changes)
    if pools_line:
        lines.append(pools_line)
    add, change, destroy = plan.counts()
    lines.append(f"Plan: {add} to add, {change} to change, {destroy} to destroy.")
    return "\n".join(lines) + "\n"


def render_json(plan: Plan) -> dict[str, Any]:
    add, change, destroy = plan.counts()
    return {
        "changes": [c.to_json() for c in plan.changes],
        "orphan_networks": list(plan.orphan_networks),
        "orphan_volumes": list(plan.orphan_volumes),
        "kept": list(plan.kept),
        "unchanged": list(plan.unchanged),
        "expired": [
            {"name": n, "expires_at": plan.lifetimes[n].expires_at if n in plan.lifetimes else None}
            for n in plan.expired
        ],
        "held": [{"name": n, "why": why} for n, why in plan.held],
        "errors": [
            p.spec_error.to_json() if p.spec_error else {"name": p.name, "message": p.message, "text": str(p)}
            for p in plan.problems
        ],
        "summary": {"add": add, "change": change, "destroy": destroy},
        "pool_changes": [c.to_json() for c in plan.pool_changes],
        "pools": [p.to_json() for p in plan.pools],
    }
