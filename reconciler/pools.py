"""Warm pools: containers started before anyone asks, claimed by sandboxes. Pure:
no engine, no clock (``now`` is a parameter), no I/O.

A ``kind: Pool`` spec is desired state like a sandbox: ``size`` idle members of
its image, each with its own network, hardened and limited like any sandbox,
never routed. A sandbox spec with ``pool: NAME`` claims an idle member instead
of creating a container, when the member can become exactly what the spec asks.

Identity. Docker labels are fixed at create, so a member cannot be relabelled.
A claim renames it to the sandbox's container name ``rc-<instance>-<sandbox>``
(atomic and unique in Docker: a container is idle or claimed, never both) and
records in the state store which container became which sandbox, with the
labels the sandbox would have had (config hash, port, hostname, ttl, ...).
``present_claimed`` shows such a container as that sandbox, so status, TTL,
url, delete, drift repair and orphan detection treat it like any other. A
renamed member whose record is missing or unfinished (a crash mid-claim) is
shown as an interrupted create: the planner replaces it.

Matching. What is fixed when a container is created cannot be applied to a
running member: the image, resources, workdir, env, egress (the network),
volumes, user, hostname and capabilities. A sandbox claims from its pool only
when the pool's values equal its own and it sets none of the others; otherwise
it is created normally, and the plan's cause (the events log) says why.

Command. A member's main process is an idle shell under init, blocked reading
its stdin (no CPU). The claim writes the sandbox's command to that stdin (one
attach call to dockerd: no process is spawned, unlike an exec, which costs a
runc exec of 50-600 ms on a loaded 2-core machine); the shell saves it as
``CLAIM_SCRIPT`` and ``exec``s it. So the command becomes the container's main
process: its output is the container log, its exit stops the container
(crash-loop backoff works) and a restart runs it again from the saved script,
as for a cold create. It runs with stdin from /dev/null, as a cold sandbox does.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping

from . import labels as L
from .spec import BASE_CAPABILITIES, format_duration

if TYPE_CHECKING:
    from .container_config import DesiredSandbox
    from .loader import Desired, LoadedPool
    from .observed import Observed, ObservedMember, ObservedSandbox
    from .plan import Change, Problem

CLAIM_DIR = "/.reconciler"  # made at the member's create, writable by the image's user
CLAIM_SCRIPT = CLAIM_DIR + "/claim.sh"
# The idle main process: run the claimed command at once if this container was
# claimed before (a restart), else wait for one line on stdin: the command, as
# ``encode_line`` spells it for printf %b; save it, then become it.
IDLE_SCRIPT = (
    f'c={CLAIM_SCRIPT}; [ -f "$c" ] && exec /bin/sh "$c" </dev/null; '
    'IFS= read -r line || exit 1; printf "%b" "$line" > "$c" && exec /bin/sh "$c" </dev/null'
)
ORPHAN_NETWORK_AGE = 60.0  # seconds: younger member networks may belong to a member being created


def claim_script(argv: list[str]) -> str:
    """The shell line that becomes the sandbox's command (``exec`` keeps its PID)."""
    return "exec " + " ".join(shlex.quote(a) for a in argv) + "\n"


def encode_line(text: str) -> bytes:
    """``text`` as one line that ``printf %b`` turns back into it: a backslash and
    every byte outside printable ASCII (newlines, UTF-8) as an escape."""
    out = []
    for byte in text.encode():
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\0{byte:03o}")
    return ("".join(out) + "\n").encode("ascii")


def command_argv(command: list[str] | str | None, entrypoint: list[str] | None, cmd: list[str] | None) -> list[str]:
    """What Docker would run for a spec ``command`` on an image with this
    ``entrypoint`` and ``cmd``: the entrypoint, then the command or the image's cmd."""
    if isinstance(command, str):
        args = ["/bin/sh", "-c", command]
    elif command is not None:
        args = list(command)
    else:
        args = list(cmd or [])
    return [*(entrypoint or []), *args]


# --- desired pools -------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredPool:
    """What one pool's members must be; built purely from its spec and image id."""

    name: str
    loaded: LoadedPool
    instance: str
    image_id: str
    config_hash: str

    @property
    def spec(self):  # noqa: ANN201 - spec.PoolBody
        return self.loaded.spec.spec

    @property
    def capabilities(self) -> list[str]:
        return sorted(BASE_CAPABILITIES)

    def member_name(self, member: str) -> str:
        return L.member_name(self.instance, self.name, member)

    def labels(self, member: str, created_at: int) -> dict[str, str]:
        out = {
            **L.owner_labels(self.instance),
            L.KIND: "pool-member",
            L.POOL: self.name,
            L.MEMBER: member,
            L.POOL_HASH: self.config_hash,
            L.SPEC_FILE: self.loaded.rel,
            L.CREATED_AT: str(created_at),
        }
        for key, value in self.loaded.spec.metadata.labels.items():
            out[L.USER_PREFIX + key] = value
        return out


def desired_pool(loaded: LoadedPool, instance: str, image_id: str) -> DesiredPool:
    """The members ``loaded`` asks for; the hash covers every field fixed at create."""
    key = ("desired", instance, image_id)
    hit = loaded.memo.get(key)
    if hit is not None:
        return hit
    body = loaded.spec.spec
    fields = {
        "image": body.image,
        "env": dict(sorted(body.env.items())),
        "workdir": body.workdir,
        "resources": {"memory": body.resources.memory, "cpus": body.resources.cpus, "pids": body.resources.pids},
        "egress": body.egress,
        "labels": dict(sorted(loaded.spec.metadata.labels.items())),
        "idle": IDLE_SCRIPT,  # a new idle process replaces the members too
    }
    payload = json.dumps({"fields": fields, "image_id": image_id}, sort_keys=True, separators=(",", ":"))
    pool = loaded.memo[key] = DesiredPool(
        name=loaded.name, loaded=loaded, instance=instance, image_id=image_id,
        config_hash=hashlib.sha256(payload.encode()).hexdigest(),
    )
    return pool


def mismatch(pool: DesiredPool, want: DesiredSandbox) -> list[str]:
    """The sandbox fields that keep ``want`` from claiming a member of ``pool``
    (empty: it may). Each is fixed when a container is created."""
    spec, body = want.spec, pool.spec
    out = []
    if want.image_id != pool.image_id:
        out.append("spec.image")
    for name in ("resources", "workdir", "env", "egress"):
        if getattr(spec, name) != getattr(body, name):
            out.append(f"spec.{name}")
    for name in ("volumes", "user", "hostname", "capabilities"):
        if getattr(spec, name):  # the pool has none of these: the sandbox must not set them
            out.append(f"spec.{name}")
    return out


# --- claimed members -------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """The state store's record of one claim: which container became ``sandbox``.
    ``labels``: the labels the sandbox would have had if created cold."""

    sandbox: str
    container_id: str
    labels: Mapping[str, str]
    complete: bool = False  # False: the claim began and may not have finished
    claimed_at: float = 0.0


def present_claimed(box: ObservedSandbox, sandbox: str, claim: Claim | None) -> ObservedSandbox:
    """A member container renamed for ``sandbox``, shown as that sandbox: with the
    labels its claim recorded, or, when the claim is unknown or unfinished, as an
    interrupted create (state ``created``) that the planner replaces."""
    mine = claim is not None and claim.container_id == box.container_id
    labels = {**box.labels, **(claim.labels if mine else {}), L.SANDBOX: sandbox}
    for key in (L.POOL, L.MEMBER, L.POOL_HASH):  # the member's own, whatever the record says
        if key in box.labels:
            labels[key] = box.labels[key]
    state = box.state if mine and claim.complete else "created"
    return replace(box, name=sandbox, labels=labels, state=state)


def member_network(instance: str, labels: Mapping[str, str]) -> str | None:
    """The network a member (idle or claimed) was created with, from its labels."""
    pool, member = labels.get(L.POOL), labels.get(L.MEMBER)
    return L.member_name(instance, pool, member) if pool and member else None


# --- planning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolChange:
    action: Literal["create", "destroy"]
    pool: str
    cause: str
    desired: DesiredPool | None = None  # create
    member: ObservedMember | None = None  # destroy

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "pool": self.pool,
            "cause": self.cause,
            "container_id": self.member.container_id if self.member else None,
        }


@dataclass(frozen=True)
class PoolSize:
    name: str
    idle: int  # running members of the current spec, ready to be claimed
    claimed: int  # sandboxes running in a former member of this pool
    target: int | None  # the spec's size (None: no valid spec)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "idle": self.idle, "claimed": self.claimed, "target": self.target}


@dataclass(frozen=True)
class PoolPlan:
    changes: tuple[Change, ...]  # the sandbox changes, creates from a pool rewritten as claims
    pool_changes: tuple[PoolChange, ...] = ()
    sizes: tuple[PoolSize, ...] = ()
    problems: tuple[Problem, ...] = ()
    orphan_networks: tuple[str, ...] = ()


def plan_pools(
    desired: Desired,
    observed: Observed,
    changes: Iterable[Change],
    now: float | None,
    unavailable: frozenset[str] = frozenset(),
) -> PoolPlan:
    """Assign idle members to the sandboxes that can claim one, and plan each
    pool's members: replace outdated, exited and too old ones, start what is
    missing to ``size``, remove those of deleted pools. Claimed members are
    sandboxes and never touched here.

    ``unavailable``: container ids already being changed (by a background
    refill): neither claimed nor planned again. ``now`` None: no max_age."""
    from .plan import Problem

    changes = list(changes)
    pools: dict[str, DesiredPool] = {}
    problems: list[Problem] = []
    why_not: dict[str, str] = {}  # pool -> why no sandbox can claim from it
    for name, loaded in sorted(desired.pools.items()):
        image_id = observed.images.get(loaded.spec.spec.image)
        if not observed.pool_support:
            problems.append(Problem(name, "warm pools need the docker engine (--engine docker); "
                                          "sandboxes of this pool are created normally"))
            why_not[name] = "this engine has no warm pools"
        elif image_id is None:
            problems.append(Problem(name, f'pool {name}: image "{loaded.spec.spec.image}" is not present on the '
                                          "engine; build or load it (no registry pull is attempted)"))
            why_not[name] = "its image is missing"
        else:
            pools[name] = desired_pool(loaded, observed.instance, image_id)
    for name in desired.protected_names:
        why_not.setdefault(name, "its spec is invalid")

    by_pool: dict[str, list[ObservedMember]] = defaultdict(list)
    for member in observed.members:
        if member.container_id not in unavailable:
            by_pool[member.pool].append(member)
    claimable: dict[str, list[ObservedMember]] = {}
    out: list[PoolChange] = []
    for name, members in sorted(by_pool.items()):
        keep = name in desired.protected_names or not desired.complete or (
            name not in pools and name in desired.pools  # its image is missing or pools are unsupported
        )
        pool = pools.get(name)
        ready: list[ObservedMember] = []
        for member in sorted(members, key=lambda m: (m.created_at or 0, m.member)):
            if keep or (member.spec_file or "") in desired.protected_files:
                continue  # left as it is until the spec can be read
            if member.state == "created" and _young(member, now):
                continue  # being started (by a refill in another thread or process)
            cause = _retire(member, pool, now)
            if cause is None:
                ready.append(member)
            elif member.state != "removing":
                out.append(PoolChange("destroy", name, cause, member=member))
        claimable[name] = ready

    sizes_idle = {name: len(ms) for name, ms in claimable.items()}
    rewritten: list[Change] = []
    for change in changes:
        rewritten.append(_claim_or_explain(change, pools, claimable, why_not))

    for name, pool in sorted(pools.items()):
        left = claimable.get(name, [])
        extra = len(left) - pool.spec.size
        for member in left[:max(0, extra)]:
            out.append(PoolChange("destroy", name, f"more idle members than size {pool.spec.size}", member=member))
        missing = pool.spec.size - len(left)
        for i in range(max(0, missing)):
            have = len(left) + i
            out.append(PoolChange("create", name, f"refill: {have} of {pool.spec.size} idle", desired=pool))

    claimed: dict[str, int] = defaultdict(int)
    in_use: set[str] = {m.container_name for m in observed.members}
    for sb in observed.sandboxes.values():
        if sb.labels.get(L.POOL):
            claimed[sb.labels[L.POOL]] += 1
            net = member_network(observed.instance, sb.labels)
            if net:
                in_use.add(net)
    for sb in observed.strays:
        net = member_network(observed.instance, sb.labels)
        if net:
            in_use.add(net)
    orphans = tuple(sorted(
        name for name, net in observed.member_networks.items()
        if name not in in_use and now is not None and now - net.created >= ORPHAN_NETWORK_AGE
    ))
    names = sorted(set(desired.pools) | set(by_pool) | set(claimed))
    sizes = tuple(
        PoolSize(n, sizes_idle.get(n, 0), claimed.get(n, 0), desired.pools[n].spec.spec.size if n in desired.pools else None)
        for n in names
    )
    order = {"destroy": 0, "create": 1}
    out.sort(key=lambda c: (c.pool, order[c.action], c.member.member if c.member else ""))
    return PoolPlan(tuple(rewritten), tuple(out), sizes, tuple(problems), orphans)


def _young(member: ObservedMember, now: float | None) -> bool:
    born = member.created_at
    return now is not None and born is not None and now - born < ORPHAN_NETWORK_AGE


def _retire(member: ObservedMember, pool: DesiredPool | None, now: float | None) -> str | None:
    """Why an idle member must go (None: it may be claimed)."""
    if pool is None:
        return "its pool was removed"
    if member.config_hash != pool.config_hash:
        return "the pool spec changed"
    if member.state != "running":
        return f"idle member is {member.state}"
    born = member.created_at
    if now is not None and born is not None and now - born >= pool.spec.max_age:
        return f"idle longer than max_age {format_duration(pool.spec.max_age)}"
    return None


def _claim_or_explain(
    change: Change,
    pools: Mapping[str, DesiredPool],
    claimable: dict[str, list[ObservedMember]],
    why_not: Mapping[str, str],
) -> Change:
    want = change.desired
    if change.action not in ("create", "recreate") or want is None or not want.spec.pool:
        return change
    name = want.spec.pool
    pool = pools.get(name)
    if pool is None:
        reason = why_not.get(name, f"there is no pool {name}")
        return replace(change, cause=f"{change.cause}; pool {name}: {reason}, created normally")
    fields = mismatch(pool, want)
    if fields:
        differ = ", ".join(fields)
        return replace(change, cause=f"{change.cause}; pool {name} does not match ({differ}), created normally")
    left = claimable.get(name) or []
    if not left:
        return replace(change, cause=f"{change.cause}; pool {name} is empty, created normally")
    member = left.pop(0)  # the oldest first: the younger ones stay claimable longer
    return replace(change, cause=f"{change.cause}; claimed from pool {name}", claim=member)


# --- reports -----------------------------------------------------------------------------


def render_lines(pool_changes: Iterable[PoolChange]) -> list[str]:
    """Plan lines for pool members: one per removal, one per pool for the refill."""
    lines = []
    starts: dict[str, list[PoolChange]] = defaultdict(list)
    for change in pool_changes:
        if change.action == "create":
            starts[change.pool].append(change)
        else:
            member = change.member.member if change.member else "?"
            lines.append(f"  - pool {change.pool}: idle member {member} ({change.cause})")
    for pool, group in sorted(starts.items()):
        size = group[0].desired.spec.size if group[0].desired else len(group)
        have = size - len(group)
        lines.append(f"  + pool {pool}: {len(group)} idle member(s) to start ({have} of {size} idle)")
    return lines


def footer(pool_changes: Iterable[PoolChange]) -> str | None:
    pool_changes = list(pool_changes)
    if not pool_changes:
        return None
    start = sum(c.action == "create" for c in pool_changes)
    remove = len(pool_changes) - start
    return f"Pools: {start} member(s) to start, {remove} to remove."
