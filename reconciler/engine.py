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
class EngineEvent:
    """Something that happened to one owned container (a Docker event)."""

    action: str  # create | start | die | oom | kill | stop | destroy | pause | unpause
    container_id: str
    sandbox: str | None
    time: float  # unix seconds, engine clock
    exit_code: int | None = None
    signal: str | None = None


class EventStream(Protocol):
    """A blocking stream of events; ``close()`` from another thread ends it. It
    also ends when the engine goes away: open a new one with ``since``."""

    def __iter__(self) -> Iterator[EngineEvent]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool = False


@dataclass(frozen=True)
class ExecState:
    """What the engine says about one exec'd process."""

    running: bool
    exit_code: int | None


# Go's os.FileMode bits, as the archive API reports them.
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27


@dataclass(frozen=True)
class PathStat:
    """A path inside a container (the archive API's stat)."""

    name: str
    size: int
    mode: int  # Go os.FileMode: type bits high, permission bits low
    link_target: str = ""

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & _MODE_DIR)

    @property
    def is_symlink(self) -> bool:
        return bool(self.mode & _MODE_SYMLINK)


class ExecStream(Protocol):
    """The output of an attached exec: ``(1, bytes)`` for stdout, ``(2, bytes)``
    for stderr, as it arrives. ``close()`` from another thread ends it."""

    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...

    def close(self) -> None: ...


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

    def events(self, since: float | None = None) -> EventStream:
        """Events of this instance's containers from ``since`` (default: now) on."""

    # --- agent operations (ops.py builds exec timeouts, uploads and downloads on these)

    def exec_create(
        self, have: ObservedSandbox, cmd: list[str], workdir: str | None = None,
        env: dict[str, str] | None = None, user: str | None = None,
    ) -> str:
        """Set up a process in a running sandbox; returns the exec id."""

    def exec_attach(self, exec_id: str) -> ExecStream:
        """Start the exec and stream its output."""

    def exec_detach(self, exec_id: str) -> None:
        """Start the exec in the background; its output is discarded."""

    def exec_inspect(self, exec_id: str) -> ExecState: ...

    def stat_path(self, have: ObservedSandbox, path: str) -> PathStat | None:
        """The stat of ``path`` in the container, or None when it does not exist."""

    def put_archive(self, have: ObservedSandbox, path: str, data: Iterable[bytes]) -> None:
        """Extract a tar stream at ``path`` (which must exist) in the container."""

    def get_archive(self, have: ObservedSandbox, path: str) -> tuple[Iterator[bytes], PathStat]:
        """A tar stream of ``path`` in the container, and its stat."""
