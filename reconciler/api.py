"""The Python API for agents: the ``reconcile`` commands without a subprocess.

    from reconciler.api import Sandbox

    with Sandbox.create("calc", image="reconciler/sandbox:latest", port=8000,
                        command=["python3", "-m", "http.server", "8000"]) as sb:
        print(sb.exec(["python3", "--version"]).stdout)
        print(sb.url, sb.request("/").status)
    # leaving the block deletes the sandbox (spec file, container, volumes)

Creating writes a spec file exactly as ``reconcile new`` does (the same
lifecycle.create) and then, unless a watch loop of this instance runs,
reconciles that one sandbox itself. Settings come from the ``RECONCILER_*``
environment variables unless given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from . import ops
from .controller import Context
from .engine import Engine, ExecResult
from .errors import NotFound
from .lifecycle import (
    Deleted,
    Response,
    create,
    delete,
    hostname_of,
    http_request,
    make_engine,
    seconds_of,
    settings_for,
    wait_ready,
)
from .loader import load_specs
from .observed import ObservedSandbox
from .settings import Settings
from .spec_writer import NewSandbox

__all__ = ["Sandbox", "Response", "Deleted"]


class Sandbox:
    """One sandbox of this instance, by name. ``Sandbox.create`` makes one;
    ``Sandbox(name)`` or ``Sandbox.get(name)`` attach to an existing one."""

    def __init__(self, name: str, settings: Settings | None = None, specs_dir: str | Path | None = None,
                 engine: Engine | None = None) -> None:
        self.name = ops.valid_name(name)
        self.settings = settings_for(settings, specs_dir)
        self._engine = engine

    def __repr__(self) -> str:
        return f"Sandbox({self.name!r}, instance={self.settings.instance!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings)
        return self._engine

    # --- lifecycle ---

    @classmethod
    def create(
        cls,
        name: str,
        image: str,
        *,
        port: int | None = None,
        command: Sequence[str] | str | None = None,
        env: Mapping[str, str] | None = None,
        uploads: Sequence[tuple[str, str]] = (),
        files: Mapping[str, str] | None = None,
        ttl: str | int | None = None,
        workdir: str | None = None,
        egress: bool = True,
        pool: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
        settings: Settings | None = None,
        specs_dir: str | Path | None = None,
    ) -> "Sandbox":
        """Write its spec (like ``reconcile new``) and start it; ``wait``: until it answers.

        ``uploads``: (source inside the specs dir, target) pairs; ``files``: target -> content;
        ``pool``: claim a warm member of that pool (a spec of kind Pool) when one matches."""
        settings = settings_for(settings, specs_dir)
        new = NewSandbox(
            name=name, image=image, port=port, ttl=ttl, command=command, env=dict(env or {}),
            uploads=tuple(uploads), files=dict(files or {}), workdir=workdir, egress=egress,
            pool=pool,
        )
        create(settings, new, apply=True, wait=wait, timeout=timeout)
        return cls(name, settings)

    @classmethod
    def get(cls, name: str, settings: Settings | None = None, specs_dir: str | Path | None = None) -> "Sandbox":
        """An existing sandbox (a spec or a container); NotFound otherwise."""
        sb = cls(name, settings, specs_dir)
        hostname_of(sb.settings, sb.name, sb.engine)
        return sb

    @classmethod
    def list(cls, settings: Settings | None = None, specs_dir: str | Path | None = None) -> list["Sandbox"]:
        """Every sandbox of this instance: those with a spec and those running without one."""
        settings = settings_for(settings, specs_dir)
        engine = make_engine(settings)
        desired = load_specs(settings.specs)
        names = set(desired.specs) | set(desired.protected_names) | set(engine.observe().sandboxes)
        return [cls(name, settings, engine=engine) for name in sorted(names)]

    def delete(self) -> Deleted:
        """The declarative kill: spec file, container, network and volumes."""
        return delete(self.settings, self.name)

    def extend(self, duration: str | int) -> float:
        """Push the expiry by ``duration`` (``"1h"`` or seconds); returns the new expiry (unix time)."""
        from .loop import extend

        return extend(self.settings, self.name, seconds_of(duration), engine=self.engine)

    def wait_ready(self, timeout: float | None = None) -> str:
        """Wait until it answers on its port and is routed (after ``exec(..., detach=True)``
        of a server); returns the URL."""
        wait_ready(Context(settings=self.settings, engine=self.engine), self.name, timeout)
        return self.url

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.delete()
        except NotFound:
            pass

    # --- state ---

    def observed(self) -> ObservedSandbox:
        """The container as the engine sees it now; NotFound when there is none."""
        return ops.find(self.engine, self.name)

    @property
    def state(self) -> str:
        """running | exited | created | ... | absent (a spec, no container yet)."""
        have = self.engine.observe().sandboxes.get(self.name)
        return have.state if have else "absent"

    @property
    def url(self) -> str:
        """``http://<hostname>.<domain>:<web port>``: its route through Traefik."""
        return self.settings.url_for(hostname_of(self.settings, self.name, self.engine))

    def direct_url(self, port: int) -> str:
        """``http://<container ip>:<port>``, any port: from this machine only, not through Traefik."""
        return ops.direct_url(self.observed(), port)

    def request(self, path: str = "/", method: str = "GET", body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
        """An HTTP request to the sandbox through its URL (Traefik)."""
        return http_request(self.url, path, method, body, headers, timeout)

    # --- working inside ---

    def exec(
        self,
        cmd: Sequence[str] | str,
        *,
        workdir: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        timeout: str | float | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> ExecResult:
        """Run a command and wait for it (a string runs under ``/bin/sh -c``).
        ``on_output(stream, chunk)`` sees output as it arrives; a timeout kills
        the command and gives exit code 124 with ``timed_out``."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        seconds = None if timeout is None else seconds_of(timeout, "timeout") if isinstance(timeout, str) else float(timeout)
        return ops.run(self.engine, self.observed(), argv, workdir=workdir, env=dict(env or {}),
                       user=user, timeout=seconds, on_output=on_output)

    def exec_detached(self, cmd: Sequence[str] | str, *, workdir: str | None = None,
                      env: Mapping[str, str] | None = None, user: str | None = None) -> str:
        """Start a background process (a dev server) and return at once; returns its exec id."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return ops.start_detached(self.engine, self.observed(), argv, workdir=workdir,
                                  env=dict(env or {}), user=user)

    def upload(self, src: str | Path, dest: str, progress: Callable[[int, int | None], None] | None = None) -> ops.Transfer:
        """Copy a host file or directory in, like ``cp -r`` (into ``dest`` if it is a directory)."""
        ops.container_path(dest, "DEST")
        return ops.upload(self.engine, self.observed(), Path(src), dest, progress)

    def download(self, src: str, dest: str | Path, progress: Callable[[int, int | None], None] | None = None) -> ops.Transfer:
        """Copy a file or directory out, like ``cp -r``; nothing is ever written outside ``dest``."""
        src = ops.container_path(src, "SRC", allow_root=False)
        return ops.download(self.engine, self.observed(), src, dest if isinstance(dest, str) else Path(dest), progress)

    def logs(self, tail: int | None = None) -> str:
        """What the sandbox's main process wrote (stdout and stderr)."""
        return b"".join(ops.logs(self.engine, self.observed(), tail=tail)).decode("utf-8", errors="replace")

    def follow_logs(self, tail: int | None = 0) -> Iterator[str]:
        """Its output as it comes, from this call on, until the sandbox stops."""
        chunks = ops.logs(self.engine, self.observed(), tail=tail, follow=True)
        return (chunk.decode("utf-8", errors="replace") for chunk in chunks)
