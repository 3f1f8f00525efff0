"""Running the dashboard: wiring its parts, uvicorn in a thread, its Traefik route on and off.

``serve_in_thread`` is what ``reconcile up`` calls next to the watch loop, and
``reconcile serve`` calls alone. The socket is bound here, before uvicorn
starts, so a port in use is a clear error at once rather than a dead thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..controller import Context
from ..engine import EngineError
from ..errors import UserError
from ..metrics import Metrics
from . import auth
from .actions import Actions
from .app import Dashboard, create_app
from .readmodel import sandbox_rows, state_counts
from .snapshot import SnapshotSource
from .route import dashboard_host, dashboard_route, dashboard_url, publish_route
from .store import Backing, EventFeed, for_settings
from .usage import UsageSampler

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def build_dashboard(
    ctx: Context,
    token: str,
    listen: str,
    *,
    backing: Backing | None = None,
    extra_hosts: tuple[str, ...] = (),
    max_age: float = 1.0,
) -> Dashboard:
    """Wire the snapshot source, the actions and the metrics into one :class:`Dashboard`.

    ``backing``: the state store, ``extend`` and the loop check (default: the
    ones under ``ctx.settings.state_dir``)."""
    backing = backing or for_settings(ctx.settings, ctx.engine)
    snapshots = SnapshotSource(ctx, backing.store, UsageSampler(), max_age=max_age)

    def states() -> dict[str, int]:
        try:
            return state_counts(sandbox_rows(snapshots.get()))
        except (EngineError, UserError):
            return {}  # engine or store unreadable: no gauge samples rather than a failed scrape

    def pools() -> dict[str, dict[str, int]]:
        try:
            return {p.name: {"idle": p.idle, "claimed": p.claimed} for p in snapshots.get().plan.pools}
        except (EngineError, UserError):
            return {}

    metrics = Metrics(states=states, pools=pools)
    feed = EventFeed(backing.store, metrics)
    hosts = auth.allowed_hosts(ctx.settings.domain, listen, (dashboard_host(ctx.settings), *extra_hosts))
    actions = Actions(ctx=Context(settings=ctx.settings, engine=ctx.engine), extend_ttl=backing.extend,
                      loop_running=backing.loop_running, note=backing.note)
    return Dashboard(snapshots=snapshots, store=backing.store, actions=actions, metrics=metrics,
                     token=auth.check_token_value(token), hosts=hosts, before_scrape=feed.catch_up)


@dataclass
class DashboardServer:
    """A running dashboard; :meth:`stop` ends it (and removes its Traefik route)."""

    url: str
    port: int
    dashboard: Dashboard
    route_file: Path | None = None
    _server: object = None
    _thread: threading.Thread | None = None
    _watcher: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._server is not None:
            self._server.should_exit = True  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if self.route_file is not None:
            self.route_file.unlink(missing_ok=True)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def bind(listen: str, port: int) -> socket.socket:
    """A listening TCP socket, or a UserError that names the address."""
    family = socket.AF_INET6 if ":" in listen.strip("[]") else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only on sockets whose proto
    # says TCP; with proto 0 every small response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UserError(f"--listen {listen} --port {port}: cannot listen there: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve_in_thread(
    ctx: Context,
    listen: str,
    port: int,
    token: str,
    stop: threading.Event | None = None,
    *,
    backing: Backing | None = None,
    route: bool = True,
    extra_hosts: tuple[str, ...] = (),
) -> DashboardServer:
    """Start the dashboard on ``listen:port`` (0: any free port) in a daemon thread.

    ``stop`` set, or :meth:`DashboardServer.stop`, ends it. ``route``: also
    write its Traefik route (``http://reconciler.<domain>:<web port>``).
    ``backing``: see :func:`build_dashboard`. The metrics it serves are
    ``.dashboard.metrics``: a loop in this process feeds its passes to
    ``.dashboard.metrics.record_pass`` (``run_watch(on_pass=...)``)."""
    import uvicorn  # here: `reconcile plan` and friends never pay for it

    dash = build_dashboard(ctx, token, listen, backing=backing, extra_hosts=extra_hosts)
    app = create_app(dash)
    sock = bind(listen, port)
    actual_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    # uvicorn installs no signal handlers outside the main thread: up's own handlers stay.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        sock.close()
        raise UserError(f"the dashboard did not start on {listen}:{actual_port}")
    host = "127.0.0.1" if listen in ("0.0.0.0", "") else ("[::1]" if listen == "::" else listen)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    handle = DashboardServer(url=f"http://{host}:{actual_port}", port=actual_port, dashboard=dash,
                             _server=server, _thread=thread)
    if route:
        try:
            handle.route_file = publish_route(ctx.settings, dashboard_route(ctx.settings, listen, actual_port))
        except (OSError, ValueError) as exc:
            logging.getLogger(__name__).warning("dashboard route not written: %s", exc)
    if stop is not None:
        def watch_stop() -> None:
            stop.wait()
            handle.stop()

        handle._watcher = threading.Thread(target=watch_stop, name="dashboard-stop", daemon=True)
        handle._watcher.start()
    return handle


def start_for_up(
    ctx: Context, port: int | None, stop: threading.Event, say: Callable[[str], None]
) -> DashboardServer | None:
    """The dashboard beside ``reconcile up``'s loop, on ``127.0.0.1:port`` and through
    Traefik. None when ``port`` is None, or when it cannot listen (said why:
    ``up``'s own job, Traefik and the loop, goes on without it)."""
    if port is None:
        return None
    token, generated = auth.admin_token(os.environ)
    # The loop runs in this process: writes leave the converging to it.
    backing = replace(for_settings(ctx.settings, ctx.engine), loop_running=lambda: True)
    try:
        server = serve_in_thread(ctx, "127.0.0.1", port, token, stop, backing=backing)
    except UserError as exc:
        say(f"Dashboard not started: {exc}")
        return None
    routed = dashboard_url(ctx.settings)
    say(f"Dashboard: {routed}/ (through Traefik) and {server.url}/{f'#token={token}' if generated else ''}")
    if generated:
        say(f"Admin token for the dashboard's actions (generated; set RECONCILER_ADMIN_TOKEN to choose one): {token}")
    return server
