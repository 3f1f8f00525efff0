"""The observed state: one snapshot of what this instance owns in the engine.

Plain data, built by an engine's ``observe()`` from one label-filtered list
call per object kind; the planner reads only this, never the engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import labels as L


@dataclass(frozen=True)
class ObservedSandbox:
    name: str
    container_id: str
    container_name: str
    state: str  # created | running | paused | restarting | exited | dead | removing
    labels: Mapping[str, str]
    image: str = ""
    image_id: str = ""
    status: str = ""  # e.g. "Up 3 minutes", "Exited (1) 2 seconds ago"
    exit_code: int | None = None
    created: float = 0.0  # when this container was created (engine clock, unix seconds)
    ip: str | None = None  # where the router reaches it
    node: str | None = None  # swarm: the node the task runs on
    route_port: int | None = None  # swarm: the node's published port (None: the spec port itself)

    @property
    def config_hash(self) -> str:
        return self.labels.get(L.CONFIG_HASH, "")

    @property
    def config(self) -> dict[str, Any] | None:
        raw = self.labels.get(L.CONFIG)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    @property
    def hostname(self) -> str | None:
        return self.labels.get(L.HOSTNAME)

    @property
    def port(self) -> int | None:
        raw = self.labels.get(L.PORT)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def health_path(self) -> str | None:
        return self.labels.get(L.HEALTH_PATH)

    @property
    def spec_file(self) -> str | None:
        return self.labels.get(L.SPEC_FILE)

    @property
    def created_at(self) -> int | None:
        raw = self.labels.get(L.CREATED_AT)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def ttl(self) -> int | None:
        raw = self.labels.get(L.TTL)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def route_target(self) -> tuple[str, int] | None:
        """(address, port) where the router and the readiness probe reach the sandbox."""
        port = self.route_port or self.port
        if self.ip and self.port and port:
            return self.ip, port
        return None

    @property
    def endpoint(self) -> str | None:
        """The URL the router forwards to, when the sandbox has a port and an address."""
        target = self.route_target
        return f"http://{target[0]}:{target[1]}" if target else None


@dataclass(frozen=True)
class ObservedNetwork:
    name: str
    network_id: str
    sandbox: str | None
    internal: bool = False


@dataclass(frozen=True)
class ObservedVolume:
    name: str
    sandbox: str | None


@dataclass(frozen=True)
class ObservedMember:
    """An idle warm-pool member: started, not routed, waiting to be claimed.
    (A claimed member is presented as the sandbox it became: ``Observed.sandboxes``.)"""

    pool: str
    member: str  # its id within the pool
    container_id: str
    container_name: str
    state: str
    labels: Mapping[str, str]
    image_id: str = ""
    ip: str | None = None

    @property
    def config_hash(self) -> str:
        return self.labels.get(L.POOL_HASH, "")

    @property
    def created_at(self) -> int | None:
        raw = self.labels.get(L.CREATED_AT)
        return int(raw) if raw and raw.isdigit() else None

    @property
    def spec_file(self) -> str | None:
        return self.labels.get(L.SPEC_FILE)


@dataclass(frozen=True)
class MemberNetwork:
    """The network a pool member was created with (it keeps it when claimed)."""

    name: str
    network_id: str
    pool: str
    created: float = 0.0  # unix seconds


@dataclass(frozen=True)
class Observed:
    instance: str
    sandboxes: Mapping[str, ObservedSandbox] = field(default_factory=dict)
    # Owned containers that cannot be the sandbox of their name (a second one,
    # or one without a sandbox label): always removed.
    strays: tuple[ObservedSandbox, ...] = ()
    networks: Mapping[str, ObservedNetwork] = field(default_factory=dict)
    volumes: Mapping[str, ObservedVolume] = field(default_factory=dict)
    images: Mapping[str, str] = field(default_factory=dict)  # reference -> image id
    # Warm pools (engines that have them): idle members, and the networks of all
    # members, idle or claimed, by name.
    members: tuple[ObservedMember, ...] = ()
    member_networks: Mapping[str, MemberNetwork] = field(default_factory=dict)
    pool_support: bool = False
