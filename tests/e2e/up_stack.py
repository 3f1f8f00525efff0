"""``reconcile up`` as a subprocess on free ports with tmp dirs, for the e2e tests (import as ``up_stack``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from helpers import TraefikHandle, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
CALCULATOR = REPO / "examples" / "calculator"
BUSYBOX = "reconciler-test/busybox:latest"
CLI = [sys.executable, "-m", "reconciler.cli"]


def pids_named(name: str, parent: int | None = None) -> list[int]:
    """Processes whose command is ``name`` (and whose parent is ``parent``), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split at the last ")".
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == name and (parent is None or ppid == parent):
            found.append(int(entry.name))
    return found


class UpStack:
    """A running ``reconcile up`` and its Traefik: probe routes, read output, kill Traefik, stop."""

    def __init__(self, proc: subprocess.Popen[bytes], root: Path, web_port: int, api_port: int,
                 output_file: Path) -> None:
        self.proc = proc
        self.specs = root / "specs"
        self.state_dir = root / "state"
        self.dynamic_dir = root / "dynamic"
        self.output_file = output_file
        self.web_port = web_port
        self.api_port = api_port
        self.traefik = TraefikHandle(proc, web_port, api_port, self.dynamic_dir, self.state_dir / "traefik.log")

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def traefik_pid(self) -> int:
        """The pid of the Traefik that ``up`` runs now (exactly one)."""
        pids = pids_named("traefik", parent=self.proc.pid)
        assert len(pids) == 1, f"expected one Traefik child of up, found {pids}\n{self.report()}"
        return pids[0]

    def api_up(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.api_port}/ping", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def wait_output(self, text: str, timeout: float = 10) -> str:
        return wait_until(lambda: text in self.output() and self.output(), timeout=timeout,
                          message=f"{text!r} in the output of up")

    def report(self) -> str:
        return (f"--- reconcile up output ---\n{self.output()[-4000:]}\n"
                f"--- Traefik log tail ---\n{self.traefik.log_tail()}")

    def signal(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` to up (as a terminal's Ctrl-C would: to its process group); its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"reconcile up did not exit within {timeout}s of {sig.name}\n{self.report()}")

    def kill(self) -> None:
        """Last resort: SIGKILL up and any Traefik it left behind."""
        children = set(pids_named("traefik", parent=self.proc.pid)) if self.proc.poll() is None else set()
        try:
            children.add(int((self.state_dir / "traefik.pid").read_text()))
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_up(root: Path, instance: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None,
             attempts: int = 3) -> UpStack:
    """Start ``reconcile up`` under ``root`` (specs/, dynamic/, state/) and wait until Traefik answers."""
    for name in ("specs", "dynamic", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        web_port, api_port = free_port(), free_port()
        while api_port == web_port:
            api_port = free_port()
        output_file = root / f"up-{attempt}.out"
        with open(output_file, "wb") as out:
            proc = subprocess.Popen(
                [*CLI, "up", "--specs", str(root / "specs"), "--traefik-dir", str(root / "dynamic"),
                 "--state-dir", str(root / "state"), "--instance", instance,
                 "--web-port", str(web_port), "--api-port", str(api_port),
                 # A free port for the dashboard: tests run side by side.
                 "--dashboard-port", "0", *extra],
                cwd=root, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        stack = UpStack(proc, root, web_port, api_port, output_file)
        deadline = time.monotonic() + 20
        while proc.poll() is None and not stack.api_up() and time.monotonic() < deadline:
            time.sleep(0.05)
        if stack.api_up() and proc.poll() is None:
            # The loop says "Watching ..." once its file and Docker watchers are armed.
            wait_until(lambda: "Watching " in stack.output() or proc.poll() is not None, timeout=20,
                       message="the watch loop to start")
            if proc.poll() is None:
                return stack
        stack.kill()
        # free_port() races with other processes: a port taken meanwhile is retried.
        if "address already in use" not in stack.output() + stack.traefik.log_tail(200):
            break
    pytest.fail(f"reconcile up did not start\n{stack.report()}", pytrace=False)


def stop_up(stack: UpStack) -> None:
    """Teardown: stop up if it still runs; never leave a Traefik behind."""
    try:
        if stack.proc.poll() is None:
            stack.signal(signal.SIGTERM)
    finally:
        stack.kill()
        print(stack.report())  # captured: shown only when the test failed


@pytest.fixture
def up(tmp_path: Path, instance: str) -> Iterator[UpStack]:
    """``reconcile up`` for this test's instance, on free ports, in tmp dirs."""
    stack = start_up(tmp_path, instance)
    try:
        yield stack
    finally:
        stop_up(stack)


def add_calculator(specs: Path) -> Path:
    """``cp -r examples/calculator/. <specs>/``; returns the spec file."""
    shutil.copytree(CALCULATOR, specs, dirs_exist_ok=True)
    return specs / "calculator.yaml"


def busybox_spec(name: str, hostname: str, body: str, port: int = 8080) -> str:
    """A spec for a busybox httpd that serves ``body`` at /."""
    return (
        "apiVersion: reconciler/v1\nkind: Sandbox\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  image: {BUSYBOX}\n"
        f"  command: [sh, -c, 'mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www']\n"
        f"  port: {port}\n"
        f"  hostname: {hostname}\n"
    )
