"""Helpers for the agent-operation tests (import as ``ops_helpers``): a private
specs/state/Traefik directory per test instance, and the CLI run inside it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import run_cli
from reconciler import cli
from reconciler.settings import Settings

BUSYBOX = "reconciler-test/busybox:latest"
PYTHON_IMAGE = "reconciler/sandbox:latest"
SERVE = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8000 -h /www"
BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class Place:
    """One test's reconciler world: its dirs, its instance, the env the CLI gets."""

    root: Path
    instance: str
    web_port: int = 0
    dynamic_dir: Path | None = None  # a Traefik fixture's directory, else a private one

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def traefik_dir(self) -> Path:
        return self.dynamic_dir or self.root / "dynamic"

    @property
    def env(self) -> dict[str, str]:
        return {
            "RECONCILER_SPECS": str(self.specs),
            "RECONCILER_INSTANCE": self.instance,
            "RECONCILER_TRAEFIK_DIR": str(self.traefik_dir),
            "RECONCILER_STATE_DIR": str(self.root / "state"),
            "RECONCILER_WEB_PORT": str(self.web_port),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        }

    @property
    def settings(self) -> Settings:
        return Settings(specs=self.specs, instance=self.instance, traefik_dir=self.traefik_dir,
                        state_dir=self.root / "state", web_port=self.web_port)

    def cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """The real ``reconcile`` process (for exit codes, pipes and signals)."""
        return run_cli(list(args), env=self.env, cwd=self.root, timeout=timeout)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``reconcile ARGS`` in this process (the same main(), without an interpreter start)."""
        flags = ["--specs", str(self.specs), "--instance", self.instance, "--traefik-dir", str(self.traefik_dir),
                 "--state-dir", str(self.root / "state"), "--web-port", str(self.web_port)]
        argv = [args[0], *flags, *args[1:]]
        out, err = io.BytesIO(), io.BytesIO()
        stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
        stderr = io.TextIOWrapper(err, encoding="utf-8", write_through=True)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = cli.main(argv)
            except SystemExit as exc:  # argparse's own usage errors
                code = int(exc.code or 0)
            stdout.flush()
            stderr.flush()
        return subprocess.CompletedProcess(argv, code, out.getvalue().decode(), err.getvalue().decode())

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """The CLI as a running process with piped, unbuffered output."""
        return subprocess.Popen([sys.executable, "-u", "-m", "reconciler.cli", *args], cwd=self.root,
                                env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def new(self, name: str, *extra: str, command: str = SERVE, port: int | None = 8000, image: str = BUSYBOX) -> str:
        """``reconcile new NAME ... --wait -- sh -c COMMAND``; returns what it printed (the URL, if any)."""
        args = ["new", name, "--image", image, "--wait", *extra]
        if port:
            args += ["--port", str(port)]
        result = self.run(*args, "--", "sh", "-c", command)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def make_place(tmp_path: Path, instance: str, traefik=None) -> Place:  # noqa: ANN001 - helpers.TraefikHandle
    """A place of its own; with ``traefik``, routed by that Traefik (its dir and web port)."""
    if traefik is not None:
        place = Place(tmp_path, instance, traefik.web_port, traefik.dynamic_dir)
    else:
        place = Place(tmp_path, instance)
    place.specs.mkdir(parents=True, exist_ok=True)
    return place


@pytest.fixture
def place(tmp_path: Path, instance: str) -> Place:
    """A place for this test's instance (import this fixture into a test module)."""
    return make_place(tmp_path, instance)


@contextlib.contextmanager
def private_place(request, docker_client, root: Path) -> Iterator[Place]:  # noqa: ANN001 - pytest/docker objects
    """A place with an instance of its own, for a sandbox a whole test module
    shares; everything the instance owns is removed afterwards, by the same
    function the ``instance`` fixture uses per test."""
    # By plugin name: "import conftest" may give another directory's conftest.
    conftest = request.config.pluginmanager.get_plugin(str(Path(__file__).with_name("conftest.py")))
    place = make_place(root, "t" + secrets.token_hex(4))
    try:
        yield place
    finally:
        errors = conftest._remove_instance(docker_client, place.instance)
        assert not errors, errors


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_random(path: Path, size: int) -> str:
    """A file of ``size`` random bytes, written in chunks; returns its sha256."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


def read_line(stream, limit: float = 30.0) -> bytes:  # noqa: ANN001 - a pipe
    """One line from a pipe, or AssertionError after ``limit`` seconds (no hang)."""
    buf = b""
    fd = stream.fileno()
    deadline = time.monotonic() + limit
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no full line within {limit}s; got {buf!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            byte = os.read(fd, 1)
            assert byte, f"stream ended; got {buf!r}"
            buf += byte
    return buf
