"""``reconcile up``: the whole stack on one machine.

A supervised Traefik (the real binary, through ``traefik_proc``) serving the
rendered directory, plus the watch loop in a thread. Traefik is restarted when
it dies: it reads the whole dynamic directory when it starts, so every route
is back as soon as it answers again. Stopping ``up`` stops Traefik and the
loop; sandboxes keep running (``reconcile destroy --all`` removes them).
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .controller import Context
from .errors import UserError
from .loop import run_watch
from .settings import Settings
from .status import LoopEvent
from .traefik_proc import TraefikError, TraefikOptions, start_traefik, stop_traefik, wait_ready

Say = Callable[[str], None]

# The entrypoint traefik_proc opens for sandbox traffic (the other is "traefik":
# API, dashboard and /ping).
WEB_ENTRYPOINT = "web"
READY_TIMEOUT = 10.0  # seconds for Traefik to answer /ping after a start
FIRST_RESTART_DELAY = 0.0  # a crash after a good run is retried at once: routes back fast
MIN_RESTART_DELAY = 0.5
# Capped low enough that every route is back within 5 s of any exit, even after
# repeated kills (a start takes 0.3-1.5 s here); a crash loop of Traefik still
# costs only one start every 2 s.
MAX_RESTART_DELAY = 2.0
STABLE_AFTER = 10.0  # a run this long resets the backoff
STOP_TIMEOUT = 10.0  # seconds the loop thread gets to finish after the stop signal
ROUTE_WAIT = 3.0  # seconds a "ready" line waits for Traefik to serve the route


@dataclass(frozen=True)
class UpOptions:
    """What ``up`` adds to the global settings."""

    listen: str = "127.0.0.1"  # address of the web entrypoint; the API is always loopback
    api_port: int = 8081
    resync_interval: float = 30.0
    traefik_args: tuple[str, ...] = ()  # extra Traefik flags, e.g. a certificate resolver's definition
    log_file: Path | None = None  # Traefik's log; default <state_dir>/traefik.log
    dashboard_port: int | None = 8090  # the web dashboard on 127.0.0.1 (None: not served)


def listen_host(listen: str) -> str:
    """The host part of a ``host:port`` address for ``listen``: an IP address (IPv6 in brackets)."""
    raw = listen.strip()
    try:
        ip = ipaddress.ip_address(raw.removeprefix("[").removesuffix("]"))
    except ValueError:
        raise UserError(f'--listen: expected an IP address like 127.0.0.1 or 0.0.0.0, got "{listen}"') from None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def traefik_options(settings: Settings, options: UpOptions) -> TraefikOptions:
    """Traefik's static configuration for ``up``: traefik/traefik.yml with the ports, the
    listen address and the directory from the settings (the defaults give exactly that file)."""
    if settings.web_port == 0:
        raise UserError("--web-port: up runs Traefik, which needs a port for sandbox traffic (got 0)")
    if not 1 <= options.api_port <= 65535:
        raise UserError(f"--api-port: expected a port from 1 to 65535, got {options.api_port}")
    if options.api_port == settings.web_port:
        raise UserError(f"--api-port: {options.api_port} is already the web port; pick another")
    if settings.entrypoint != WEB_ENTRYPOINT:
        # Routers attach to settings.entrypoint; up's Traefik opens only "web" for
        # them, so any other name would leave every route unreachable.
        raise UserError(
            f'--entrypoint: up serves sandboxes on the entrypoint "{WEB_ENTRYPOINT}" '
            f'(got "{settings.entrypoint}"); other names are for a Traefik you run yourself'
        )
    log_file = options.log_file or settings.state_dir / "traefik.log"
    return TraefikOptions(
        dynamic_dir=settings.traefik_dir,
        web_address=f"{listen_host(options.listen)}:{settings.web_port}",
        api_address=f"127.0.0.1:{options.api_port}",
        log_file=log_file,
        extra_args=tuple(options.traefik_args),
    )


def restart_delay(previous: float | None, uptime: float) -> float:
    """Seconds to wait before the next start of a Traefik that died after ``uptime`` seconds.

    The first restart (or one after a run of ``STABLE_AFTER``) is immediate, so a
    single crash costs only Traefik's start time; a crash loop backs off, doubling
    up to ``MAX_RESTART_DELAY``."""
    if previous is None or uptime >= STABLE_AFTER:
        return FIRST_RESTART_DELAY
    return min(MAX_RESTART_DELAY, max(MIN_RESTART_DELAY, previous * 2))


class TraefikSupervisor:
    """One Traefik process, kept running until :meth:`stop`."""

    def __init__(self, options: TraefikOptions, say: Say) -> None:
        self.options = options
        self.say = say
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # guards proc against stop() racing a restart
        self._stopping = False

    @property
    def pid_file(self) -> Path:
        return Path(self.options.log_file or ".").with_name("traefik.pid")

    def start(self) -> None:
        """Start Traefik and wait until it answers; TraefikError (with its log tail) if not."""
        with self._lock:
            if self._stopping:
                return
            self.proc = start_traefik(self.options)
            proc = self.proc
            self.pid_file.write_text(f"{proc.pid}\n")
        try:
            wait_ready(self.options.api_address, timeout=READY_TIMEOUT, proc=proc)
        except TraefikError as exc:
            stop_traefik(proc)
            raise TraefikError(f"{exc}\n{log_tail(self.options.log_file)}".rstrip()) from None

    def supervise(self, stop: threading.Event) -> None:
        """Restart Traefik whenever it exits, until ``stop`` is set (run in a thread)."""
        delay: float | None = None
        started = time.monotonic()
        while not stop.is_set():
            proc = self.proc
            if proc is None or proc.poll() is None:
                stop.wait(0.1)
                continue
            uptime = time.monotonic() - started
            delay = restart_delay(delay, uptime)
            self.say(f"Traefik exited (code {proc.returncode}) after {uptime:.1f}s; "
                     f"restarting{f' in {delay:g}s' if delay else ''}")
            if stop.wait(delay):
                return
            started = time.monotonic()
            try:
                self.start()
            except (TraefikError, OSError) as exc:
                self.say(f"Traefik did not come back: {exc}")
                continue
            self.say(f"Traefik is back (pid {self.proc.pid}); it reloaded every route from "
                     f"{self.options.dynamic_dir}")

    def stop(self) -> None:
        """Stop Traefik for good (SIGTERM, then SIGKILL after 5 s)."""
        with self._lock:
            self._stopping = True
            proc = self.proc
        if proc is not None:
            stop_traefik(proc)
            self.pid_file.unlink(missing_ok=True)

    def reap_stale(self) -> int | None:
        """Stop a Traefik left running by an ``up`` that was killed (its pid file says
        which); only a traefik process serving this same directory is touched."""
        try:
            pid = int(self.pid_file.read_text().strip())
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        ours = f"--providers.file.directory={Path(self.options.dynamic_dir).resolve()}".encode()
        if Path(argv[0].decode(errors="replace")).name != "traefik" or ours not in argv:
            return None
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + 5
            while Path(f"/proc/{pid}").exists() and not _is_zombie(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].startswith("Z")


def log_tail(path: Path | None, lines: int = 15) -> str:
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "--- Traefik log (" + str(path) + ") ---\n" + "\n".join(text)


# Loop events worth a line on up's terminal besides "watching"; "created"/"recreated"
# are followed by "ready" (the line with the URL), "stopped" by up's own last line.
_SHOWN_EVENTS = frozenset({"ready", "restarted", "destroyed", "expired", "crashloop", "stalled", "error"})


def describe_event(event: LoopEvent) -> str | None:
    """The line ``up`` prints for a loop event, or None to stay quiet."""
    if event.kind == "watching":
        return f"{event.message[:1].upper()}{event.message[1:]}; Ctrl-C stops Traefik and the loop, sandboxes keep running"
    if event.kind not in _SHOWN_EVENTS:
        return None
    name = event.name or "-"
    if event.kind == "ready":
        return f"  ready  {name}  {event.url or '(no port: not routed)'}"
    return f"  {event.kind}  {name}  {event.message}".rstrip()


def announce(events: queue.SimpleQueue[LoopEvent | None], api_address: str, say: Say) -> None:
    """Print loop events until None; a URL only once Traefik serves it (run in a thread).

    "ready" means the route is written; Traefik loads it a moment later, and a URL
    printed before that would answer 404 to whoever is quick to open it."""
    while (event := events.get()) is not None:
        line = describe_event(event)
        if line is None:
            continue
        if event.kind == "ready" and event.url:
            host = urllib.parse.urlsplit(event.url).hostname or ""
            deadline = time.monotonic() + ROUTE_WAIT
            while not is_routed(api_address, host) and time.monotonic() < deadline:
                time.sleep(0.05)
        say(line)


def is_routed(api_address: str, host: str) -> bool:
    """True when Traefik's API shows an enabled router for exactly ``Host(`host`)``."""
    query = urllib.parse.urlencode({"search": host})
    try:
        with urllib.request.urlopen(f"http://{api_address}/api/http/routers?{query}", timeout=1) as resp:
            routers = json.load(resp)
    except (OSError, ValueError):
        return False
    return any(r.get("rule") == f"Host(`{host}`)" and r.get("status") == "enabled" for r in routers)


def run_up(ctx: Context, options: UpOptions, say: Say) -> int:
    """Run Traefik and the watch loop until SIGINT/SIGTERM; returns the exit code.

    Sandboxes are left running on exit."""
    settings: Settings = ctx.settings
    if options.resync_interval <= 0:
        raise UserError(f"--resync: expected a positive number of seconds, got {options.resync_interval:g}")
    traefik = TraefikSupervisor(traefik_options(settings, options), say)
    stop = threading.Event()
    # Before Traefik starts: a signal that arrives once it answers must stop it too.
    restore = _on_signals(stop)
    stale = traefik.reap_stale()
    if stale:
        say(f"Stopped Traefik pid {stale}, left running by an earlier up that did not exit cleanly")
    try:
        traefik.start()
    except TraefikError as exc:
        restore()
        raise UserError(f"Traefik would not start: {exc}") from None
    from .dashboard.server import start_for_up  # the web framework is imported only here

    try:
        dashboard = start_for_up(ctx, options.dashboard_port, stop, say)
    except UserError:
        traefik.stop()
        restore()
        raise
    failure: list[BaseException] = []
    announcements: queue.SimpleQueue[LoopEvent | None] = queue.SimpleQueue()

    def watch() -> None:
        try:
            run_watch(ctx, stop, resync_interval=options.resync_interval, on_event=announcements.put,
                      on_pass=dashboard.dashboard.metrics.record_pass if dashboard else None)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            stop.set()

    opts = traefik.options
    say(f"Traefik: sandboxes on http{'s' if settings.tls_resolver else ''}://*.{settings.domain}:"
        f"{settings.web_port} (listening on {opts.web_address}), its API and dashboard on "
        f"http://{opts.api_address}/dashboard/ (pid {traefik.proc.pid}, log {opts.log_file})")
    loop_thread = threading.Thread(target=watch, name="reconcile-watch", daemon=True)
    supervisor = threading.Thread(target=traefik.supervise, args=(stop,), name="traefik-supervisor",
                                  daemon=True)
    announcer = threading.Thread(target=announce, args=(announcements, traefik.options.api_address, say),
                                 name="up-announcer", daemon=True)
    loop_thread.start()
    supervisor.start()
    announcer.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        stop.set()
        loop_thread.join(STOP_TIMEOUT)
        supervisor.join(STOP_TIMEOUT)
        announcements.put(None)
        announcer.join(ROUTE_WAIT + 1)
        if dashboard is not None:
            dashboard.stop()
        traefik.stop()
        restore()
    if loop_thread.is_alive():
        say(f"the watch loop did not stop within {STOP_TIMEOUT:g}s")
        return 1
    if failure:
        exc = failure[0]
        if isinstance(exc, UserError):
            raise exc
        say(f"the watch loop failed: {type(exc).__name__}: {exc}")
        return 1
    say("Stopped Traefik and the loop; sandboxes are still running (reconcile destroy --all removes them).")
    return 0


def _on_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; returns a function that puts the old handlers back."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
