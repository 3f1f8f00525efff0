"""Sandbox lifetimes (TTL): when a lifetime began, when it ends. Pure: ``now`` is
always a parameter, the clock is never read here.

A lifetime belongs to one version of a spec (its ``spec_hash``, over the parsed
spec, so comments and formatting do not count): editing the spec starts a new
lifetime, recreating the container does not. The state store keeps lifetimes;
the container's ``created-at``/``ttl`` labels are the fallback when the store
has no record (a lost or new state dir), so a restart never resets a lifetime.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace

from .container_config import DesiredSandbox
from .loader import LoadedSpec
from .observed import ObservedSandbox
from .spec import format_duration


@dataclass(frozen=True)
class Lifetime:
    spec_hash: str
    born_at: float  # unix seconds: first creation for this version of the spec
    expires_at: float | None  # None: no ttl
    expired_at: float | None = None  # when the reconciler carried the expiry out

    def is_expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def seconds_left(self, now: float) -> float | None:
        return None if self.expires_at is None else max(0.0, self.expires_at - now)


def spec_hash(loaded: LoadedSpec) -> str:
    """sha256 of the parsed spec: what a lifetime belongs to."""
    digest = loaded.memo.get("spec_hash")
    if digest is None:  # once per spec version, not once per pass
        payload = json.dumps(loaded.spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        digest = loaded.memo["spec_hash"] = hashlib.sha256(payload.encode()).hexdigest()
    return digest


def resolve(
    loaded: LoadedSpec,
    want: DesiredSandbox | None,
    have: ObservedSandbox | None,
    stored: Lifetime | None,
    now: float,
) -> Lifetime:
    """The lifetime of ``loaded`` now: the stored one while the spec is unchanged,
    else adopted from the container's labels, else a new one starting at ``now``."""
    digest = spec_hash(loaded)
    ttl = loaded.spec.spec.ttl
    if stored is not None and stored.spec_hash == digest:
        return stored
    # Whole seconds: the container's created-at label holds an integer, and the
    # store and the label must name the same instant (a restart that adopts the
    # label's lifetime, status and the expiry all agree to the second).
    born = float(int(now))
    if (
        stored is None
        and have is not None
        and have.created_at is not None
        and want is not None
        and have.config_hash == want.config_hash
        and have.ttl == ttl
    ):
        born = float(have.created_at)  # the state store is new: the container remembers
    return Lifetime(digest, born, born + ttl if ttl else None)


def from_labels(have: ObservedSandbox) -> Lifetime | None:
    """A lifetime read from a container alone (its spec is invalid or gone)."""
    if have.created_at is None:
        return None
    born = float(have.created_at)
    return Lifetime("", born, born + have.ttl if have.ttl else None)


def extended(life: Lifetime, seconds: float, now: float) -> Lifetime:
    """Push the expiry by ``seconds`` (from now, if it already passed: the sandbox comes back)."""
    if life.expires_at is None:
        raise ValueError("the sandbox has no ttl, so it never expires: nothing to extend")
    base = max(life.expires_at, now)
    return replace(life, expires_at=base + seconds, expired_at=None)


def iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def describe(life: Lifetime | None, now: float) -> str | None:
    """``in 4m12s``, ``expired 2026-01-01T10:00:00Z``, or None without a ttl."""
    if life is None or life.expires_at is None:
        return None
    if life.is_expired(now):
        return f"expired {iso(life.expires_at)}"
    return f"in {format_duration(max(1, int(life.expires_at - now + 0.999)))}"
