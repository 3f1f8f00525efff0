"""Running ``reconcile watch`` as a subprocess in tests, and reading its JSON event lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import helpers

from reconciler.traefik import write_atomic

BUSYBOX = "reconciler-test/busybox:latest"


def spec_yaml(name: str, *, command: str | None = None, port: int | None = 8000, ttl: str | None = None,
              env: dict[str, str] | None = None, health: str | None = None) -> str:
    """A busybox sandbox spec; by default ``httpd`` serving ``/www/index.html`` = its name (+ env)."""
    if command is None:
        command = f"mkdir -p /www && echo {name}-$V > /www/index.html && exec httpd -f -p {port} -h /www"
    lines = [
        "apiVersion: reconciler/v1", "kind: Sandbox", "metadata:", f"  name: {name}", "spec:",
        f"  image: {BUSYBOX}", f"  command: {json.dumps(command)}",
    ]
    if port is not None:
        lines.append(f"  port: {port}")
    if ttl is not None:
        lines.append(f"  ttl: {ttl}")
    if health is not None:
        lines += ["  health:", f"    path: {health}"]
    env = {"V": "1", **(env or {})}
    lines.append("  env:")
    lines += [f"    {k}: {json.dumps(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


class Watch:
    """``python -m reconciler.cli watch --output json`` for one test's instance and dirs."""

    def __init__(self, instance: str, root: Path, traefik_dir: Path | None = None, resync: str = "1s",
                 state_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.instance = instance
        self.specs = root / "specs"
        self.specs.mkdir(exist_ok=True)
        self.state_dir = state_dir or root / "state"
        self.traefik_dir = traefik_dir or root / "dynamic"
        self.resync = resync
        self.env = env or {}
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def globals(self) -> list[str]:
        return ["--specs", str(self.specs), "--state-dir", str(self.state_dir), "--traefik-dir",
                str(self.traefik_dir), "--instance", self.instance]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Another ``reconcile`` command on the same instance and dirs."""
        return helpers.run_cli([*args, *self.globals()], env=self.env)

    def start(self, wait: bool = True) -> Watch:
        self.events = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "watch", "--output", "json", "--resync", self.resync,
             *self.globals()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, **self.env},
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        threading.Thread(target=self._read_err, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_event("watching", timeout=20)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    def _read_err(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.stderr += line

    def seen(self, kind: str, name: str | None = None, contains: str = "") -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["kind"] == kind and (name is None or e["name"] == name)
                    and contains in (e["message"] or "")]

    def wait_event(self, kind: str, name: str | None = None, timeout: float = 15, contains: str = "",
                   count: int = 1) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            assert self.proc is not None
            hits = self.seen(kind, name, contains)
            if len(hits) >= count:
                return hits[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"watch exited with {self.proc.returncode}: {self.stderr}")
            return None

        try:
            return helpers.wait_until(found, timeout, message=f"event {kind} {name or ''} {contains}".strip())
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nevents: {self.kinds()}\nstderr: {self.stderr[-2000:]}") from None

    def until(self, predicate, timeout: float, message: str = ""):  # noqa: ANN001, ANN201
        """``helpers.wait_until``, with the watch's recent events and stderr on a timeout."""
        try:
            return helpers.wait_until(predicate, timeout, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast events: {self.kinds()[-30:]}\nstderr: {self.stderr[-2000:]}") from None

    def kinds(self) -> list[tuple[str, str | None, str]]:
        with self._lock:
            return [(e["kind"], e["name"], e["message"]) for e in self.events]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"watch did not stop within {timeout}s after SIGTERM") from None

    def kill(self) -> None:
        """``kill -9``, and wait for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def write(self, name: str, text: str) -> Path:
        """Write a spec file atomically (a temp name the loader ignores, then rename)."""
        write_atomic(self.specs, text, name)
        return self.specs / name

    def status(self) -> dict[str, dict[str, Any]]:
        out = self.cli("status", "--output", "json")
        assert out.returncode == 0, out.stderr
        return {row["name"]: row for row in json.loads(out.stdout)}


def containers(client, instance: str, sandbox: str | None = None, all: bool = True) -> list[dict[str, Any]]:  # noqa: ANN001
    """Owned containers of ``instance`` (optionally of one sandbox), from the low-level API."""
    labels = [f"reconciler.instance={instance}", "reconciler.managed=true"]
    if sandbox is not None:
        labels.append(f"reconciler.sandbox={sandbox}")
    return client.api.containers(all=all, filters={"label": labels})


def running(client, instance: str, sandbox: str) -> dict[str, Any] | None:  # noqa: ANN001
    found = [c for c in containers(client, instance, sandbox) if c["State"] == "running"]
    return found[0] if len(found) == 1 else None


def host_of(watch: Watch, name: str) -> str:
    """The Host header a sandbox is routed at (from ``reconcile url``)."""
    out = watch.cli("url", name, "--output", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["hostname"]


def until(predicate, timeout: float, message: str = ""):  # noqa: ANN001, ANN201
    return helpers.wait_until(predicate, timeout, interval=0.05, message=message)


def now() -> float:
    return time.time()
