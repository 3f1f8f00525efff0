"""Status conditions and loop events, derived from one pass. Pure: no engine, no
clock, no I/O (the state store keeps what this computes).

Conditions follow kstatus: ``Ready`` (serving: running and, with a port,
answering), ``Reconciling`` (work under way) and ``Stalled`` (no progress
without help: invalid spec, missing image, crash loop, expired, a permanent
error, a port that never answers), each with a reason, a message and the time
its status last flipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .lifetime import iso
from .plan import is_expiry

if TYPE_CHECKING:
    from .controller import PassInput, PassResult
    from .settings import Settings

CONDITION_TYPES = ("Ready", "Reconciling", "Stalled")


@dataclass(frozen=True)
class LoopEvent:
    """Something the reconciler did or noticed, for the events log and callers."""

    kind: str  # ready created recreated restarted destroyed expired crashloop stalled error watching stopped
    name: str | None
    message: str
    url: str | None = None
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso(self.time),
            "unix": round(self.time, 3),
            "kind": self.kind,
            "name": self.name,
            "message": self.message,
            "url": self.url,
        }


@dataclass(frozen=True)
class Condition:
    type: str  # Ready | Reconciling | Stalled
    status: bool
    reason: str
    message: str
    since: float  # when ``status`` last changed

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": iso(self.since),
        }


@dataclass(frozen=True)
class SandboxStatus:
    name: str
    conditions: tuple[Condition, ...]  # in CONDITION_TYPES order
    observed_hash: str | None  # config hash of the container last seen
    url: str | None = None

    def condition(self, kind: str) -> Condition:
        return next(c for c in self.conditions if c.type == kind)

    @property
    def summary(self) -> str:
        """The one word a table shows: the Stalled or Reconciling reason, else Ready's."""
        for kind in ("Stalled", "Reconciling"):
            c = self.condition(kind)
            if c.status:
                return c.reason
        return self.condition("Ready").reason

    def same_as(self, other: SandboxStatus | None) -> bool:
        if other is None or other.observed_hash != self.observed_hash or other.url != self.url:
            return False
        mine = [(c.type, c.status, c.reason, c.message) for c in self.conditions]
        theirs = [(c.type, c.status, c.reason, c.message) for c in other.conditions]
        return mine == theirs

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "observedHash": self.observed_hash,
            "conditions": [c.to_json() for c in self.conditions],
        }


# One verdict per sandbox: (ready, reason, message), (reconciling, ...), (stalled, ...).
_Verdict = tuple[tuple[bool, str, str], tuple[bool, str, str], tuple[bool, str, str]]
_NO = (False, "", "")


def derive(
    result: PassResult,
    inp: PassInput,
    previous: Mapping[str, SandboxStatus],
    settings: Settings,
) -> tuple[dict[str, SandboxStatus], list[LoopEvent]]:
    """Each sandbox's status after ``result``, and the events it makes."""
    now = inp.now
    desired, plan, observed = result.desired, result.plan, result.observed
    failures = {r.change.name: r for r in result.results if not r.ok}
    problems = {p.name: p.message for p in plan.problems if p.name}
    held = dict(plan.held)
    names = set(desired.specs) | set(observed.sandboxes) | set(plan.expired) | set(held)
    names |= {n for n in desired.protected_names}
    if inp.only is not None:
        names &= set(inp.only)
    if inp.destroy_only:
        names &= {c.name for c in plan.changes} | set(plan.expired)
    statuses: dict[str, SandboxStatus] = {}
    events = _change_events(result, inp, previous, settings)
    for name in sorted(names):
        have = observed.sandboxes.get(name)
        loaded = desired.specs.get(name)
        if loaded is None and have is None and name not in desired.protected_names:
            continue  # gone for good: its status goes too
        url = _url(result, name, settings)
        port = loaded.spec.spec.port if loaded else (have.port if have else None)
        verdict = _verdict(name, result, inp, previous.get(name), failures, problems, held, port, url, settings)
        prev = previous.get(name)
        conditions = tuple(
            _condition(kind, value, prev.condition(kind) if prev else None, now)
            for kind, value in zip(CONDITION_TYPES, verdict)
        )
        status = SandboxStatus(name, conditions, have.config_hash if have else None, url if port else None)
        statuses[name] = status
        events.extend(_transition_events(status, None if inp.announce_ready else prev, now))
    if inp.only is not None or inp.destroy_only:
        # A partial pass judges only what it looked at; the rest keeps its status.
        for name, prev in previous.items():
            statuses.setdefault(name, prev)
    return statuses, events


def _verdict(
    name: str,
    result: PassResult,
    inp: PassInput,
    prev: SandboxStatus | None,
    failures: Mapping[str, Any],
    problems: Mapping[str, str],
    held: Mapping[str, str],
    port: int | None,
    url: str | None,
    settings: Settings,
) -> _Verdict:
    desired, plan = result.desired, result.plan
    have = result.observed.sandboxes.get(name)
    serving = (
        have is not None and have.running and have.container_id not in inp.died
        and (not port or name in result.ready)
    )
    what = f"answering on port {port}" if port else "running (no port: not routed)"
    ready = (True, "Ready", what) if serving else _NO
    if name in plan.expired:
        life = plan.lifetimes.get(name)
        when = iso(life.expires_at) if life and life.expires_at else "earlier"
        message = f"ttl expired {when}; edit the spec or run `reconcile extend {name} DURATION` to bring it back"
        return (False, "Expired", message), _NO, (True, "Expired", message)
    if not desired.complete and name not in desired.specs:
        message = f"{desired.errors[0] if desired.errors else 'the specs directory cannot be read'}; left as it runs"
        return ready, _NO, (True, "SpecsUnreadable", message)
    if name in desired.protected_names or (name not in desired.specs and name in plan.kept):
        message = "its spec file is invalid (`reconcile validate` says why); the sandbox is left as it runs"
        return ready, _NO, (True, "InvalidSpec", message)
    if name in problems:
        return ready, _NO, (True, "ImageMissing", problems[name])
    if name in held:
        rec = result.restarts.get(name)
        message = held[name] + (f"; last log lines:\n{rec.logs}" if rec and rec.logs else "")
        return (False, "CrashLoop", message), _NO, (True, "CrashLoop", message)
    if name in failures:
        failure = failures[name]
        text = f"{failure.change.action} failed: {failure.error}"
        if failure.permanent:
            return ready, _NO, (True, "Failed", text)
        return ready, (True, "Retrying", text), _NO
    if have is None:
        return _NO, (True, "Creating", "the container is being created"), _NO
    if name in crash_restarted(result, inp):
        rec = inp.restarts[name]
        message = f"restarted after a crash (restart #{rec.restarts}); Ready once it stays up"
        return _NO, (True, "Restarted", message), _NO
    if serving:
        return ready, _NO, _NO
    if have.running and port:
        what = f"port {port}" + (f" ({have.health_path})" if have.health_path else "")
        waiting = prev.condition("Reconciling") if prev else None
        stalled = prev.condition("Stalled") if prev else None
        since = waiting.since if waiting and waiting.status and waiting.reason == "WaitingForPort" else inp.now
        if (stalled and stalled.status and stalled.reason == "NotAnswering") or (
            inp.now - since >= settings.ready_timeout
        ):
            message = f"running, but {what} did not answer within {settings.ready_timeout:g}s"
            return _NO, _NO, (True, "NotAnswering", message)
        return _NO, (True, "WaitingForPort", f"started; waiting for {what} to answer"), _NO
    return _NO, (True, "Starting", f"the container is {have.state}"), _NO


def crash_restarted(result: PassResult, inp: PassInput) -> set[str]:
    """Sandboxes this pass restarted after a crash: not Ready until a later look finds them up."""
    return {
        r.change.name for r in result.results
        if r.ok and r.change.action == "start" and (rec := inp.restarts.get(r.change.name)) is not None
        and rec.retry_at is not None
    }


def _condition(kind: str, value: tuple[bool, str, str], prev: Condition | None, now: float) -> Condition:
    status, reason, message = value
    if not reason:
        reason = {"Ready": "NotReady", "Reconciling": "Idle", "Stalled": "Progressing"}[kind]
    since = prev.since if prev is not None and prev.status == status else now
    return Condition(kind, status, reason, message, since)


def _url(result: PassResult, name: str, settings: Settings) -> str | None:
    want = result.plan.desired.get(name)
    have = result.observed.sandboxes.get(name)
    hostname = (want.hostname if want else None) or (have.hostname if have else None)
    return settings.url_for(hostname) if hostname else None


def _transition_events(status: SandboxStatus, prev: SandboxStatus | None, now: float) -> list[LoopEvent]:
    out = []
    ready, stalled = status.condition("Ready"), status.condition("Stalled")
    was_ready = prev is not None and prev.condition("Ready").status
    if ready.status and not was_ready:
        out.append(LoopEvent("ready", status.name, ready.message, status.url, now))
    was_stalled = prev.condition("Stalled") if prev is not None else None
    # Crash loops and expiries have their own events; other stalls are news once (per watch).
    if stalled.status and stalled.reason not in ("CrashLoop", "Expired") and not (
        was_stalled and was_stalled.status and was_stalled.reason == stalled.reason
    ):
        out.append(LoopEvent("stalled", status.name, f"{stalled.reason}: {stalled.message}", None, now))
    return out


def _change_events(
    result: PassResult, inp: PassInput, previous: Mapping[str, SandboxStatus], settings: Settings
) -> list[LoopEvent]:
    now = inp.now
    out: list[LoopEvent] = []
    for r in result.results:
        c = r.change
        if not r.ok:
            message = f"{c.action} failed: {r.error}"
            prev = previous.get(c.name)
            if prev is None or message not in (prev.condition("Stalled").message, prev.condition("Reconciling").message):
                out.append(LoopEvent("error", c.name, message, None, now))  # once, not every retry
            continue
        if c.action == "destroy":
            kind = "expired" if is_expiry(c) else "destroyed"
        else:
            kind = {"create": "created", "recreate": "recreated", "start": "restarted"}[c.action]
        message = c.cause
        rec = inp.restarts.get(c.name)
        if c.action == "start" and rec is not None and rec.retry_at is not None:
            message = f"restart #{rec.restarts} after a crash (exit code {rec.exit_code})"
        elif c.action == "start" and c.observed is not None and c.observed.container_id in inp.stopped_outside:
            message = "stopped from outside"
        url = _url(result, c.name, settings) if c.action != "destroy" and c.desired and c.desired.spec.port else None
        out.append(LoopEvent(kind, c.name, message, url, now))
    destroyed = {r.change.name for r in result.results if r.change.action == "destroy"}
    for name in result.plan.expired:
        life, before = result.plan.lifetimes.get(name), inp.lifetimes.get(name)
        newly = life is not None and life.expired_at is not None and (before is None or before.expired_at is None)
        if newly and name not in destroyed and life.expires_at is not None:
            message = f"ttl expired {iso(life.expires_at)} (its container was already gone)"
            out.append(LoopEvent("expired", name, message, None, now))
    for name in result.crashed:
        rec = result.restarts.get(name)
        if rec is not None:
            held = dict(result.plan.held).get(name)
            out.append(LoopEvent("crashloop", name, held or f"exited with code {rec.exit_code}", None, now))
    for net in result.plan.orphan_networks:
        out.append(LoopEvent("destroyed", None, f"orphan network {net}", None, now))
    for vol in result.plan.orphan_volumes:
        out.append(LoopEvent("destroyed", None, f"orphan volume {vol}", None, now))
    return out
