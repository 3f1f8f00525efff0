"""Small helpers shared by the integration and e2e tests (import as ``helpers``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
               message: str = "") -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` seconds; exceptions from the
    predicate count as "not yet" and the last one is shown.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - "not yet" until the deadline
            last = exc
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def run_cli(args: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reconciler.cli *args`` and capture its text output.

    ``env`` is added to (not substituted for) this process's environment, so
    PATH, DOCKER_HOST and the like still reach the CLI.
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        env=full_env, cwd=cwd, timeout=timeout, text=True,
        stdin=subprocess.DEVNULL, capture_output=True, check=False,
    )


class TraefikHandle:
    """A running Traefik started by the ``traefik`` fixture, and ways to probe it."""

    def __init__(self, proc: subprocess.Popen[bytes], web_port: int, api_port: int,
                 dynamic_dir: Path, log_file: Path) -> None:
        self.proc = proc
        self.web_port = web_port
        self.api_port = api_port
        self.dynamic_dir = dynamic_dir
        self.log_file = log_file
        self.web_url = f"http://127.0.0.1:{web_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"

    def get(self, host: str, path: str = "/") -> requests.Response:
        """GET ``path`` through the web entrypoint with ``Host: host``."""
        return requests.get(self.web_url + path, headers={"Host": host}, timeout=2,
                            allow_redirects=False)

    def wait_status(self, host: str, status: int, timeout: float = 10.0,
                    path: str = "/") -> requests.Response:
        """Poll :meth:`get` every 50 ms until it answers ``status``; return that response."""
        deadline = time.monotonic() + timeout
        last = "no request made"
        while True:
            try:
                resp = self.get(host, path)
                if resp.status_code == status:
                    return resp
                last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{host}{path} did not answer {status} within {timeout:.1f}s; last: {last}\n"
                    f"--- Traefik log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def router(self, name: str) -> dict | None:
        """The API's view of router ``name`` from the file provider, or None."""
        return self._api(f"/api/http/routers/{name}@file")

    def service(self, name: str) -> dict | None:
        """The API's view of service ``name`` from the file provider, or None."""
        return self._api(f"/api/http/services/{name}@file")

    def _api(self, path: str) -> dict | None:
        resp = requests.get(self.api_url + path, timeout=2)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    def write(self, name: str, text: str) -> Path:
        """Write a dynamic config file atomically (temp name Traefik ignores + rename)."""
        target = self.dynamic_dir / name
        tmp = self.dynamic_dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target)
        return target

    def remove(self, name: str) -> None:
        (self.dynamic_dir / name).unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"
