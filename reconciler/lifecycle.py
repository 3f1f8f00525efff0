"""A sandbox's life as ``reconcile new`` and ``reconcile delete`` see it: write
its spec and start it, wait until it answers and is routed, delete it with all
it owns. The CLI commands and the Python API (api.py) both call these.

Without a watch loop (``lock.watch_running``) these converge the one sandbox
themselves (``controller.apply_once(ctx, only={name})``); with one, they leave
that to the loop and wait for its result.
"""

from __future__ import annotations

import http.client
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from . import ops
from .cli import make_engine
from .controller import Context, apply_once, last_log_lines, publish_routes
from .engine import Engine, EngineError
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

DELETE_GRACE = 15.0  # seconds delete keeps retrying what the engine is slow to let go of


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
    loaded = load_specs(settings.specs).specs.get(name)
    if loaded is not None and loaded.path not in files:
        files.append(loaded.path)
    engine = make_engine(settings)
    before = engine.observe()
    owned_volumes = sorted(v.name for v in before.volumes.values() if v.sandbox == name)
    if not files and name not in before.sandboxes and not owned_volumes:
        raise NotFound(f'no sandbox "{name}" in instance "{settings.instance}" (no spec in {display_path(settings.specs)})')
    for path in files:
        path.unlink(missing_ok=True)
    # The spec is gone, so the plan is "destroy, volumes too", with the route off first.
    result = apply_once(Context(settings=settings, engine=engine), wait=False, only={name})
    problems = [f"{r.change.name}: {r.error}" for r in result.results if not r.ok]
    # What is left (a network whose endpoint the engine is still releasing,
    # a volume of a container already gone) is removed here, given some time.
    deadline = time.monotonic() + DELETE_GRACE
    while True:
        after = engine.observe()
        if name not in after.sandboxes:
            problems = []
            for obj, remove in [(n, engine.remove_network) for n in after.networks.values()] + [
                (v, engine.remove_volume) for v in after.volumes.values()
            ]:
                if obj.sandbox == name:
                    try:
                        remove(obj.name)
                    except EngineError as exc:
                        problems.append(str(exc))
            if not problems:
                break
        if time.monotonic() >= deadline:
            left = "; ".join(problems) or "its container is still there"
            raise UserError(f"the spec is removed, but not all of sandbox {name}: {left}; `reconcile delete {name}` again")
        time.sleep(0.2)
    return Deleted(name, tuple(display_path(p) for p in files), name in before.sandboxes, tuple(owned_volumes))


# --- HTTP through the sandbox's URL ------------------------------------------------------


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
