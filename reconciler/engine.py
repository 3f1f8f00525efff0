"""The engine seam: what the executor, the loop and the agent operations need
from a container engine. ``docker_engine.DockerEngine`` is the plain engine; a
swarm engine implements the same protocol. The planner and the Traefik
renderer never see an engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

from .container_config import DesiredSandbox
from .observed import Observed, ObservedSandbox


class EngineError(Exception):
    """An engine call that failed. ``permanent`` errors are not retried
    (missing image, name taken by a container we do not own); others are."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool = False


class Engine(Protocol):
    instance: str

    def observe(self, images: Iterable[str] = ()) -> Observed:
        """One snapshot of everything this instance owns, plus the ids of ``images``."""

    def create(self, want: DesiredSandbox, created_at: int) -> str:
        """Create, upload into and start a sandbox; returns its container id."""

    def start(self, have: ObservedSandbox) -> None: ...

    def remove(self, have: ObservedSandbox, remove_network: bool, remove_volumes: bool) -> None: ...

    def remove_network(self, name: str) -> None: ...

    def remove_volume(self, name: str) -> None: ...

    def logs(self, have: ObservedSandbox, tail: int | None = None, follow: bool = False) -> Iterator[bytes]: ...
