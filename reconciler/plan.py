"""The planner: desired + observed -> Plan. Pure: no engine, no clock, no I/O.

Terraform's vocabulary: ``+`` create, ``-/+`` recreate (with the cause),
``~`` start, ``-`` destroy. Invalid specs are never a reason to destroy: their
sandboxes are *kept* exactly as they run and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .container_config import DesiredSandbox, changed_fields, desired_sandbox
from .errors import SpecError
from .loader import Desired
from .observed import Observed, ObservedSandbox

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

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "cause": self.cause,
            "container_id": self.observed.container_id if self.observed else None,
            "config_hash": self.desired.config_hash if self.desired else None,
        }


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

    @property
    def has_changes(self) -> bool:
        return bool(self.changes or self.orphan_networks or self.orphan_volumes)

    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to destroy), counted as Terraform does (a recreate is both)."""
        add = sum(c.action in ("create", "recreate") for c in self.changes)
        change = sum(c.action == "start" for c in self.changes)
        destroy = sum(c.action in ("destroy", "recreate") for c in self.changes)
        return add, change, destroy


def compute_plan(desired: Desired, observed: Observed) -> Plan:
    """What it takes to make ``observed`` equal ``desired``."""
    changes: list[Change] = []
    problems: list[Problem] = [Problem(None, e.message, e) for e in desired.errors]
    kept: list[str] = []
    unchanged: list[str] = []
    wanted: dict[str, DesiredSandbox] = {}

    for name, loaded in sorted(desired.specs.items()):
        have = observed.sandboxes.get(name)
        image_id = observed.images.get(loaded.spec.spec.image)
        if image_id is None:
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
        want = desired_sandbox(loaded, observed.instance, image_id)
        wanted[name] = want
        if have is None:
            changes.append(Change("create", name, "new sandbox", want))
        elif have.config_hash != want.config_hash:
            changes.append(Change("recreate", name, _recreate_cause(have, want), want, have))
        elif have.state == "dead":
            changes.append(Change("recreate", name, "container is dead", want, have))
        elif have.state in ("created", "exited", "paused"):
            changes.append(Change("start", name, f"container is {have.state}", want, have))
        else:
            unchanged.append(name)

    protected = set(desired.protected_names)
    for name, have in sorted(observed.sandboxes.items()):
        if name in wanted or name in kept:
            continue
        if name in protected or (have.spec_file or "") in desired.protected_files:
            kept.append(name)
            continue
        if name in desired.specs:
            continue  # its image is missing: reported above, left as it is
        if not desired.complete:
            kept.append(name)
            continue
        changes.append(Change("destroy", name, "no spec", observed=have, remove_volumes=True))
    for stray in observed.strays:
        changes.append(Change("destroy", stray.name or stray.container_name, "duplicate container", observed=stray))

    alive = set(wanted) | set(kept) | set(desired.specs)
    going = {c.name for c in changes if c.action == "destroy"}
    orphan_networks = tuple(
        sorted(n for n, net in observed.networks.items() if net.sandbox not in alive and net.sandbox not in going)
    )
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
    )


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
    for name in plan.kept:
        lines.append(f"  ! {name} (left as it is: its spec is invalid or its image is missing)")
    for problem in plan.problems:
        lines.append(f"error: {problem}")
    if not plan.has_changes:
        lines.append("No changes. Sandboxes match the specs.")
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
        "errors": [
            p.spec_error.to_json() if p.spec_error else {"name": p.name, "message": p.message, "text": str(p)}
            for p in plan.problems
        ],
        "summary": {"add": add, "change": change, "destroy": destroy},
    }
