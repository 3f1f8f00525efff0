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


def volume_name(instance: str, sandbox: str, volume: str) -> str:
    return f"{NAME_PREFIX}-{instance}-{sandbox}-{volume}"


def default_hostname(instance: str, sandbox: str) -> str:
    """``qa-<12 hex>``: derived, so it is stable across recreates and restarts."""
    digest = hashlib.sha256(f"{instance}/{sandbox}".encode()).hexdigest()
    return f"qa-{digest[:12]}"
