"""The dashboard's read model: one snapshot of the world in, the JSON the page shows out.

Pure: a :class:`Snapshot` (specs, observation, plan, readiness, usage and what
the state store says) goes in, pydantic models come out. No engine, no clock
of its own, no I/O, so it is unit-tested without Docker and timed by the
benchmark for hundreds of sandboxes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from ..labels import default_hostname
from ..lifetime import iso as _iso
from ..loader import Desired
from ..observed import Observed, ObservedSandbox
from ..plan import SYMBOLS, Change, Plan, Problem, render_text
from ..settings import Settings
from ..status import Condition
from .usage import Usage

State = Literal["ready", "starting", "reconciling", "pending", "stalled", "stopped", "invalid", "expired", "deleting"]
# How the page colours each state: good, busy, bad, gone.
TONE: dict[str, str] = {
    "ready": "ok", "starting": "busy", "reconciling": "busy", "pending": "busy",
    "stalled": "bad", "stopped": "bad", "invalid": "bad", "expired": "gone", "deleting": "gone",
}


# --- what the state store contributes -------------------------------------------


@dataclass(frozen=True)
class StoreView:
    """What the watch loop last recorded; lifetimes come with the plan (``plan.lifetimes``)."""

    conditions: Mapping[str, tuple[Condition, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PoolCounts:
    name: str
    ready: int  # idle members, ready to be claimed
    total: int  # idle + claimed
    target: int | None = None
    claimed: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Everything one dashboard refresh knows, taken at ``taken_at`` (unix seconds)."""

    taken_at: float
    settings: Settings
    desired: Desired
    observed: Observed
    plan: Plan
    ready: frozenset[str] = frozenset()  # sandboxes that answer on their port now
    usage: Mapping[str, Usage] = field(default_factory=dict)  # by container id
    usage_source: str = "cgroup"  # "cgroup" | "unavailable"
    store: StoreView = field(default_factory=StoreView)
    pools: tuple[PoolCounts, ...] = ()  # empty until warm pools exist


# --- what the API returns ------------------------------------------------------------


class PendingChange(BaseModel):
    action: str
    symbol: str
    cause: str


class ConditionRow(BaseModel):
    type: str
    status: bool
    reason: str
    message: str
    since: float


class SandboxRow(BaseModel):
    name: str
    state: State
    tone: str = Field(description="ok | busy | bad | gone: the colour of the state")
    reason: str = Field(description="why it is in this state, short (CrashLoop, SpecInvalid, Exited (1) ...)")
    message: str = ""
    url: str | None = None
    image: str | None = None
    container_id: str | None = None
    spec_file: str | None = None
    created_at: float | None = Field(None, description="first creation of this lifetime, unix seconds")
    age_seconds: float | None = None
    expires_at: float | None = Field(None, description="when the TTL destroys it, unix seconds")
    ttl_left_seconds: float | None = None
    expired_at: float | None = None
    cpu_percent: float | None = Field(None, description="of one core, averaged since the previous refresh")
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    pending: PendingChange | None = Field(None, description="what an apply would do to it now")
    conditions: list[ConditionRow] = Field(default_factory=list, description="as the watch loop last recorded them")


class PlanChangeView(BaseModel):
    action: str
    symbol: str
    name: str
    cause: str


class PlanView(BaseModel):
    changes: list[PlanChangeView]
    orphan_networks: list[str]
    orphan_volumes: list[str]
    kept: list[str]
    errors: list[str]
    add: int
    change: int
    destroy: int
    text: str = Field(description="the plan as `reconcile plan` prints it")


class PoolView(BaseModel):
    name: str
    ready: int = Field(description="idle members, ready to be claimed")
    total: int = Field(description="idle and claimed members")
    target: int | None = Field(None, description="the pool's size (None: no valid spec)")
    claimed: int = Field(0, description="sandboxes running in a former member")


class Overview(BaseModel):
    now: float = Field(description="server time of the snapshot (unix seconds): count TTLs down from it")
    instance: str
    domain: str
    counts: dict[str, int] = Field(description="sandboxes by state")
    sandboxes: list[SandboxRow]
    plan: PlanView
    pools: list[PoolView]
    usage_source: str = Field(description="cgroup: CPU/memory read from the kernel; unavailable: not visible here")


# --- building it -------------------------------------------------------------------


def sandbox_names(desired: Desired, observed: Observed) -> list[str]:
    return sorted(set(desired.specs) | set(observed.sandboxes) | set(desired.protected_names))


@dataclass(frozen=True)
class _Index:
    """Per-name lookups built once per refresh, so a row costs O(1), not O(sandboxes)."""

    changes: Mapping[str, Change]
    problems: Mapping[str, Problem]
    spec_errors: Mapping[str, str]  # spec file (relative) -> first error text
    expired: frozenset[str]
    held: Mapping[str, str]  # crash-looping: why the restart waits

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Index:
        changes: dict[str, Change] = {}
        for change in snapshot.plan.changes:
            changes.setdefault(change.name, change)
        problems = {p.name: p for p in snapshot.plan.problems if p.name}
        errors: dict[str, str] = {}
        for error in snapshot.desired.errors:
            errors.setdefault(error.path, str(error))
        plan = snapshot.plan
        return cls(changes, problems, errors, frozenset(plan.expired), dict(plan.held))

    def spec_error(self, spec_file: str | None) -> str | None:
        if spec_file:
            for path, text in self.spec_errors.items():
                if path == spec_file or path.endswith("/" + spec_file):
                    return text
        return None


def _condition(snapshot: Snapshot, name: str, kind: str) -> Condition | None:
    for cond in snapshot.store.conditions.get(name, ()):
        if cond.type == kind and cond.status:
            return cond
    return None


def state_of(snapshot: Snapshot, name: str, index: _Index | None = None) -> tuple[State, str, str]:
    """(state, reason, message) of one sandbox. What is seen now (specs, containers,
    the plan) decides first; the loop's recorded conditions add what only it
    knows (a crash loop, a failed create, a port that never answered)."""
    index = index or _Index.of(snapshot)
    desired, plan = snapshot.desired, snapshot.plan
    have = snapshot.observed.sandboxes.get(name)
    loaded = desired.specs.get(name)
    change = index.changes.get(name)
    problem = index.problems.get(name)

    if name in desired.protected_names or (have is not None and (have.spec_file or "") in desired.protected_files):
        message = index.spec_error(have.spec_file if have else None) or "its spec file does not validate"
        return "invalid", "SpecInvalid", message
    if name in index.expired:
        life = plan.lifetimes.get(name)
        when = f" at {_iso(life.expires_at)}" if life and life.expires_at else ""
        return "expired", "TTLExpired", f"its TTL ran out{when}; extend it or edit the spec to bring it back"
    stalled = _condition(snapshot, name, "Stalled")
    if stalled is not None and stalled.reason not in ("Expired", "InvalidSpec"):
        return "stalled", stalled.reason, stalled.message
    if problem is not None:
        return "stalled", "ImageMissing" if "image" in problem.message else "Problem", problem.message
    if name in index.held:
        return "stalled", "CrashLoop", index.held[name]
    if have is None:
        if loaded is None:
            return "deleting", "NoSpec", "no spec file: the next apply removes it"
        return "pending", "NotCreated", change.cause if change else "waiting for the next apply"
    if loaded is None:
        return "deleting", "NoSpec", "no spec file: the next apply removes it"
    if change is not None and change.action == "recreate":
        return "reconciling", "Outdated", change.cause
    if have.state in ("exited", "dead"):
        return "stopped", have.status or have.state, change.cause if change else ""
    if have.state != "running":
        return "reconciling", have.state.capitalize(), have.status
    if have.port is None or name in snapshot.ready or _condition(snapshot, name, "Ready"):
        return "ready", "Ready", have.status
    reconciling = _condition(snapshot, name, "Reconciling")
    if reconciling is not None:
        return "starting", reconciling.reason, reconciling.message
    return "starting", "WaitingForPort", f"port {have.port} does not answer yet"


def sandbox_row(snapshot: Snapshot, name: str, index: _Index | None = None) -> SandboxRow:
    index = index or _Index.of(snapshot)
    settings, now = snapshot.settings, snapshot.taken_at
    have = snapshot.observed.sandboxes.get(name)
    loaded = snapshot.desired.specs.get(name)
    state, reason, message = state_of(snapshot, name, index)
    hostname = (have.hostname if have else None) or (
        (loaded.spec.spec.hostname or default_hostname(settings.instance, name)) if loaded else None
    )
    created = (have.created_at or have.created or None) if have else None
    lifetime = snapshot.plan.lifetimes.get(name)
    expires = lifetime.expires_at if lifetime is not None else None
    if lifetime is None and have is not None and have.created_at and have.ttl:
        expires = float(have.created_at + have.ttl)  # no record (spec invalid or gone): the labels
    expired_at = None
    if state == "expired":
        expired_at = (lifetime.expired_at or lifetime.expires_at) if lifetime else None
        expires = None
    usage = snapshot.usage.get(have.container_id) if have else None
    change = index.changes.get(name)
    memory_limit = loaded.spec.spec.resources.memory if loaded else None
    return SandboxRow(
        name=name,
        state=state,
        tone=TONE[state],
        reason=reason,
        message=message,
        url=settings.url_for(hostname) if hostname and have is not None else None,
        image=loaded.spec.spec.image if loaded else (have.image if have else None),
        container_id=have.container_id[:12] if have else None,
        spec_file=loaded.rel if loaded else (have.spec_file if have else None),
        created_at=float(created) if created else None,
        age_seconds=round(now - created, 1) if created else None,
        expires_at=expires,
        ttl_left_seconds=round(expires - now, 1) if expires else None,
        expired_at=expired_at,
        cpu_percent=usage.cpu_percent if usage else None,
        memory_bytes=usage.memory_bytes if usage else None,
        memory_limit_bytes=memory_limit if isinstance(memory_limit, int) else None,
        pending=PendingChange(action=change.action, symbol=SYMBOLS[change.action], cause=change.cause)
        if change else None,
        conditions=[ConditionRow(type=c.type, status=c.status, reason=c.reason, message=c.message, since=c.since)
                    for c in snapshot.store.conditions.get(name, ())],
    )


def plan_view(plan: Plan) -> PlanView:
    add, change, destroy = plan.counts()
    return PlanView(
        changes=[PlanChangeView(action=c.action, symbol=SYMBOLS[c.action], name=c.name, cause=c.cause)
                 for c in plan.changes],
        orphan_networks=list(plan.orphan_networks),
        orphan_volumes=list(plan.orphan_volumes),
        kept=list(plan.kept),
        errors=[str(p) for p in plan.problems],
        add=add,
        change=change,
        destroy=destroy,
        text=render_text(plan),
    )


def sandbox_rows(snapshot: Snapshot) -> list[SandboxRow]:
    index = _Index.of(snapshot)
    return [sandbox_row(snapshot, name, index) for name in sandbox_names(snapshot.desired, snapshot.observed)]


def state_counts(rows: list[SandboxRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return counts


def overview(snapshot: Snapshot) -> Overview:
    """The page's one request: the table, the counts, the plan and the pools."""
    rows = sandbox_rows(snapshot)
    # The plan knows each warm pool's size; a snapshot may bring its own counts.
    pools = snapshot.pools or tuple(
        PoolCounts(p.name, p.idle, p.idle + p.claimed, p.target, p.claimed) for p in snapshot.plan.pools
    )
    return Overview(
        now=snapshot.taken_at,
        instance=snapshot.settings.instance,
        domain=snapshot.settings.domain,
        counts=state_counts(rows),
        sandboxes=rows,
        plan=plan_view(snapshot.plan),
        pools=[PoolView(name=p.name, ready=p.ready, total=p.total, target=p.target, claimed=p.claimed) for p in pools],
        usage_source=snapshot.usage_source,
    )


class EventView(BaseModel):
    id: int = Field(description="increasing; ask for ?after=<last id> to get only newer events")
    time: float = Field(description="unix seconds")
    sandbox: str | None = None
    kind: str = Field(description="created, recreated, destroyed, expired, restarted, extended, ...")
    message: str = ""
