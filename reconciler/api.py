"""The Python API for agents: the ``reconcile`` commands without a subprocess.

    from reconciler.api import Sandbox

    with Sandbox.create("calc", image="reconciler/sandbox:latest", port=8000,
                        command=["python3", "-m", "http.server", "8000"]) as sb:
        print(sb.exec(["python3", "--version"]).stdout)
        print(sb.url, sb.request("/").status)
    # leaving the block deletes the sandbox (spec file, container, volumes)

Creating writes a spec file exactly as ``reconcile new`` does (same function)
and then, unless a watch loop of this instance runs, reconciles that one
sandbox itself. Settings come from the ``RECONCILER_*`` environment variables
unless given. The functions below the class are what the CLI commands call.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from . import ops
from .cli import make_engine
from .controller import Context, apply_once, last_log_lines, publish_routes
from .engine import Engine, ExecResult
from .errors import InvalidArgument, NotFound, UserError
from .labels import default_hostname
from .loader import display_path, load_specs
from .observed import ObservedSandbox
from .probe import is_ready, ready_set
from .settings import GLOBAL_OPTIONS, Settings, env_default
from .spec import parse_duration
from .spec_writer import NewSandbox, check, render, spec_data, spec_files_for, write_new

# --- plumbing -------------------------------------------------------------------------


def settings_for(settings: Settings | None = None, specs_dir: str | Path | None = None) -> Settings:
    """``settings``, or the ones the ``RECONCILER_*`` environment gives; ``specs_dir`` overrides."""
    if settings is None:
        settings = Settings(**{name: env_default(name) for name in GLOBAL_OPTIONS})
    if specs_dir is not None:
        settings = settings.model_copy(update={"specs": Path(specs_dir)})
    return settings


def watch_running(settings: Settings) -> bool:
    """True while a ``reconcile watch`` of this instance and state dir runs (it then applies)."""
    from .lock import watch_running as running

    return running(settings)


def seconds_of(duration: str | int | float, what: str = "duration") -> int:
    """``"90s"``/``"1h"``/``"1h30m"`` or a number of seconds -> seconds."""
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        if duration > 0:
            return int(duration)
    elif isinstance(duration, str):
        text = duration.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        try:
            return parse_duration(text)
        except Exception:  # noqa: BLE001 - PydanticCustomError: say it our way
            pass
    raise InvalidArgument(f'{what}: expected a duration like 30s, 15m or 2h, got "{duration}"')


def hostname_of(settings: Settings, name: str, engine: Engine | None = None) -> str:
    """The sandbox's hostname: from its spec, else from its container; NotFound if neither."""
    loaded = load_specs(settings.specs).specs.get(name)
    if loaded is not None:
        return loaded.spec.spec.hostname or default_hostname(settings.instance, name)
    have = (engine or make_engine(settings)).observe().sandboxes.get(name)
    if have is None or not have.hostname:
        raise NotFound(f'no sandbox "{name}" in instance "{settings.instance}"')
    return have.hostname


def route_published(settings: Settings, name: str) -> bool:
    """Whether this instance's Traefik file routes ``name`` (what a watch loop wrote)."""
    from ruamel.yaml import YAML

    from .traefik import dynamic_filename

    try:
        text = (settings.traefik_dir / dynamic_filename(settings.instance)).read_text(encoding="utf-8")
        routers = ((YAML(typ="safe").load(text) or {}).get("http") or {}).get("routers") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return f"rc-{settings.instance}-{name}" in routers


def wait_ready(ctx: Context, name: str, timeout: float | None = None, loop: bool | None = None) -> ObservedSandbox:
    """Wait until sandbox ``name`` runs, answers on its port and is routed.

    Without a watch loop this publishes the routes itself once it answers; with
    one, it waits for the loop to. An exited sandbox fails at once, with its
    last log lines."""
    settings = ctx.settings
    loop = watch_running(settings) if loop is None else loop
    deadline = time.monotonic() + (settings.ready_timeout if timeout is None else timeout)
    have: ObservedSandbox | None = None
    while True:
        observed = ctx.engine.observe()
        have = observed.sandboxes.get(name)
        if have is not None and have.state in ("exited", "dead"):
            code = f" with code {have.exit_code}" if have.exit_code is not None else ""
            raise UserError(f'sandbox "{name}" exited{code}{_log_tail(ctx.engine, have)}')
        if have is not None and have.running and (not have.port or is_ready(have)):
            if not have.port:
                return have
            if not loop:
                publish_routes(ctx, observed, ready_set(observed.sandboxes.values()))
            if not loop or route_published(settings, name):
                if have.hostname:
                    _await_proxy(settings.url_for(have.hostname), deadline)
                return have
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if have is None:
        raise UserError(f'sandbox "{name}" was not created within the wait (is a watch loop applying it?)')
    if not have.running:
        raise UserError(f'sandbox "{name}" is {have.state}, not running')
    if loop and is_ready(have):
        raise UserError(f'sandbox "{name}" answers, but the watch loop has not routed it yet')
    raise UserError(f'sandbox "{name}" does not answer on port {have.port}{_log_tail(ctx.engine, have)}')


TRAEFIK_NOT_FOUND = b"404 page not found\n"  # Traefik's answer for a host it has no router for


def _await_proxy(url: str, deadline: float) -> None:
    """Give a local Traefik the moment it takes to load a new route (about 0.1 s),
    so the URL works when we hand it out. Only for ``.localhost`` URLs (this
    machine); no Traefik listening means nothing to wait for."""
    if not _is_loopback_name(_host_of(url)):
        return
    end = min(deadline, time.monotonic() + 3.0)
    while True:
        try:
            response = http_request(url, "/", timeout=1.0)
        except UserError:
            return  # nothing listens there: no proxy to wait for
        if response.status != 404 or response.body != TRAEFIK_NOT_FOUND or time.monotonic() >= end:
            return
        time.sleep(0.05)


def _log_tail(engine: Engine, have: ObservedSandbox) -> str:
    tail = last_log_lines(engine, have, lines=10)
    return f"; its last output:\n{tail}" if tail else ""


# --- create / delete (what ``reconcile new`` and ``reconcile delete`` do) -----------------


@dataclass(frozen=True)
class Created:
    name: str
    spec_file: Path
    url: str | None
    applied: bool  # this process reconciled it (else a watch loop does, or nobody yet)
    ready: bool
    watch_loop: bool

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "spec_file": str(self.spec_file), "url": self.url, "applied": self.applied,
                "ready": self.ready, "watch_loop": self.watch_loop}


def create(
    settings: Settings, new: NewSandbox, apply: bool = True, wait: bool = False, timeout: float | None = None
) -> Created:
    """Write the spec of a new sandbox (never over an existing one), then start it
    unless a watch loop will; ``wait``: until it answers and is routed."""
    ops.valid_name(new.name)
    data = spec_data(new)
    spec = check(data, settings.specs)
    path = write_new(settings.specs, new.name, render(data))
    hostname = spec.spec.hostname or default_hostname(settings.instance, new.name)
    url = settings.url_for(hostname) if spec.spec.port else None
    loop = watch_running(settings)
    applied = ready = False
    if (apply or wait) and not loop:
        ctx = Context(settings=settings, engine=make_engine(settings))
        result = apply_once(ctx, wait=False, only={new.name})
        failures = [str(p) for p in result.plan.problems] + [f"{r.change.name}: {r.error}" for r in result.results if not r.ok]
        if failures:
            raise UserError(
                f"{display_path(path)} is written, but the sandbox did not start: {'; '.join(failures)} "
                f"(fix the spec, or `reconcile delete {new.name}`)"
            )
        applied = True
    if wait:
        ctx = Context(settings=settings, engine=make_engine(settings))
        wait_ready(ctx, new.name, timeout, loop)
        ready = True
    return Created(new.name, path, url, applied, ready, loop)


@dataclass(frozen=True)
class Deleted:
    name: str
    spec_files: tuple[str, ...]
    container: bool
    volumes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "spec_files": list(self.spec_files), "container": self.container,
                "volumes": list(self.volumes)}


def delete(settings: Settings, name: str) -> Deleted:
    """Remove the sandbox's spec file(s), then the sandbox with its network and volumes."""
    ops.valid_name(name)
    files = spec_files_for(settings.specs, name)
    engine = make_engine(settings)
    before = engine.observe()
    owned_volumes = sorted(v.name for v in before.volumes.values() if v.sandbox == name)
    if not files and name not in before.sandboxes and not owned_volumes:
        raise NotFound(f'no sandbox "{name}" in instance "{settings.instance}" (no spec in {display_path(settings.specs)})')
    for path in files:
        path.unlink(missing_ok=True)
    # The spec is gone, so the plan is "destroy, volumes too", with the route off first.
    result = apply_once(Context(settings=settings, engine=engine), wait=False, only={name})
    failures = [f"{r.change.name}: {r.error}" for r in result.results if not r.ok]
    after = engine.observe()
    for network in after.networks.values():
        if network.sandbox == name:
            engine.remove_network(network.name)
    for volume in after.volumes.values():
        if volume.sandbox == name:
            engine.remove_volume(volume.name)
    if failures or name in after.sandboxes:
        raise UserError(f"spec removed, but the sandbox could not be removed: {'; '.join(failures) or 'still there'}")
    return Deleted(name, tuple(display_path(p) for p in files), name in before.sandboxes, tuple(owned_volumes))


# --- the API ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def _is_loopback_name(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def http_request(url: str, path: str = "/", method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One HTTP request to ``url`` + ``path``. Names under ``.localhost`` go to
    127.0.0.1, as browsers and curl do (RFC 6761); Python's resolver does not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    address = "127.0.0.1" if _is_loopback_name(host) else host
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(address, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Host": parts.netloc, **(headers or {})})
        resp = conn.getresponse()
        return Response(resp.status, resp.read(), dict(resp.getheaders()))
    except (OSError, socket.timeout, http.client.HTTPException) as exc:
        raise UserError(f"cannot reach {url}{path}: {exc}") from exc
    finally:
        conn.close()


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
        wait: bool = True,
        timeout: float | None = None,
        settings: Settings | None = None,
        specs_dir: str | Path | None = None,
    ) -> "Sandbox":
        """Write its spec (like ``reconcile new``) and start it; ``wait``: until it answers.

        ``uploads``: (source inside the specs dir, target) pairs; ``files``: target -> content."""
        settings = settings_for(settings, specs_dir)
        new = NewSandbox(
            name=name, image=image, port=port, ttl=ttl, command=command, env=dict(env or {}),
            uploads=tuple(uploads), files=dict(files or {}), workdir=workdir, egress=egress,
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
        """Its output as it comes, until the sandbox stops."""
        for chunk in ops.logs(self.engine, self.observed(), tail=tail, follow=True):
            yield chunk.decode("utf-8", errors="replace")
