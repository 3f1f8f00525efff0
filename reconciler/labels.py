"""Ownership labels and the names of the Docker objects a sandbox owns.

Every container, network and volume the reconciler creates carries
``reconciler.managed=true`` and ``reconciler.instance=<instance>``. Nothing
without both labels (for this instance) is ever read as ours or touched.
"""

from __future__ import annotations

import hashlib

PREFIX = "reconciler."
MANAGED = PREFIX + "managed"
INSTANCE = PREFIX + "instance"
SANDBOX = PREFIX + "sandbox"
KIND = PREFIX + "kind"  # "sandbox" | "pool-member"
CONFIG_HASH = PREFIX + "config-hash"
CONFIG = PREFIX + "config"  # canonical JSON of the recreate fields, for plan causes
SPEC_FILE = PREFIX + "spec-file"  # path relative to the specs dir
HOSTNAME = PREFIX + "hostname"
PORT = PREFIX + "port"
HEALTH_PATH = PREFIX + "health-path"
CREATED_AT = PREFIX + "created-at"  # unix seconds, first creation of this lifetime
TTL = PREFIX + "ttl"  # seconds
USER_PREFIX = PREFIX + "user."  # spec metadata.labels are copied under this prefix
# Warm pool members (kind "pool-member"): labels are fixed at create, so a claimed
# member keeps these and takes the sandbox's identity by name (see pools.py).
POOL = PREFIX + "pool"
MEMBER = PREFIX + "pool-member"  # the member's own id, unique within its pool
POOL_HASH = PREFIX + "pool-hash"  # config hash of the pool spec it was made from

NAME_PREFIX = "rc"


def selector(instance: str) -> list[str]:
    """Docker label filters selecting everything this instance owns."""
    return [f"{MANAGED}=true", f"{INSTANCE}={instance}"]


def owner_labels(instance: str) -> dict[str, str]:
    """The labels that mark an object as owned by ``instance``."""
    return {MANAGED: "true", INSTANCE: instance}


def is_owned(labels: dict[str, str] | None, instance: str) -> bool:
    """True only when both ownership labels name this instance."""
    labels = labels or {}
    return labels.get(MANAGED) == "true" and labels.get(INSTANCE) == instance


def container_name(instance: str, sandbox: str) -> str:
    return f"{NAME_PREFIX}-{instance}-{sandbox}"


def network_name(instance: str, sandbox: str) -> str:
    return f"{NAME_PREFIX}-{instance}-{sandbox}"


def member_name(instance: str, pool: str, member: str) -> str:
    """``rc-<instance>.<pool>.<id>``: container and network of an idle pool member.
    The dots keep it apart from every sandbox name (no sandbox name has one)."""
    return f"{NAME_PREFIX}-{instance}.{pool}.{member}"


def claimed_sandbox(instance: str, container_name: str) -> str | None:
    """The sandbox a pool member was renamed for (``rc-<instance>-<sandbox>``), or None while idle."""
    prefix = f"{NAME_PREFIX}-{instance}-"
    rest = container_name[len(prefix):] if container_name.startswith(prefix) else ""
    return rest if rest and "." not in rest else None


def volume_name(instance: str, sandbox: str, volume: str) -> str:
    return f"{NAME_PREFIX}-{instance}-{sandbox}-{volume}"


def default_hostname(instance: str, sandbox: str) -> str:
    """``qa-<12 hex>``: derived, so it is stable across recreates and restarts."""
    digest = hashlib.sha256(f"{instance}/{sandbox}".encode()).hexdigest()
    return f"qa-{digest[:12]}"
