"""The one workload every contender runs, and the scratch spaces the cases use.

Every contender starts the same container: busybox ``httpd`` serving one file
on port 8000, with ``init`` (PID 1 httpd ignores SIGTERM: without init every
stop is a 10 s timeout) and the same limits and hardening. Every name is
unique to the run, and everything is removed afterwards by its labels.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "reconciler-test/busybox:latest"
# /www is empty in the image: write the page the probes ask for, then become httpd.
COMMAND = ["sh", "-c", "echo ok > /www/index.html; exec httpd -f -p 8000 -h /www"]
PORT = 8000
INSTANCE_LABEL = "reconciler.instance"
PROJECT_LABEL = "com.docker.compose.project"


def spec_text(name: str, hostname: str | None = None) -> str:
    host = f"\n  hostname: {hostname}" if hostname else ""
    return (
        "apiVersion: reconciler/v1\n"
        "kind: Sandbox\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  image: {IMAGE}\n"
        f"  command: [{', '.join(json.dumps(c) for c in COMMAND)}]\n"
        f"  port: {PORT}{host}\n"
    )


def names(n: int, prefix: str = "s") -> list[str]:
    width = len(str(n))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: int


def timed_run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 900) -> Timed:
    """Run ``cmd`` to completion: wall time and the child's own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(seconds, proc.returncode, out.read().decode(errors="replace"),
                     err.read().decode(errors="replace"), usage.ru_maxrss)


def reconcile_command() -> list[str]:
    """The ``reconcile`` console script of this environment, as users run it."""
    script = Path(sys.executable).parent / "reconcile"
    return [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.cli"]


class CommandFailed(RuntimeError):
    pass


@dataclass
class Workspace:
    """A specs dir, Traefik dir and state dir for one reconciler instance."""

    root: Path
    instance: str
    web_port: int = 8080
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, parent: Path, prefix: str = "bench") -> "Workspace":
        instance = unique(prefix)
        root = parent / instance
        for sub in ("specs", "traefik", "state"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return cls(root, instance)

    @property
    def specs(self) -> Path:
        return self.root / "specs"

    @property
    def traefik_dir(self) -> Path:
        return self.root / "traefik"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def env(self) -> dict[str, str]:
        return {
            "RECONCILER_SPECS": str(self.specs),
            "RECONCILER_TRAEFIK_DIR": str(self.traefik_dir),
            "RECONCILER_INSTANCE": self.instance,
            "RECONCILER_STATE_DIR": str(self.state_dir),
            "RECONCILER_WEB_PORT": str(self.web_port),
            **self.extra_env,
        }

    def write_spec(self, name: str, hostname: str | None = None) -> Path:
        """Atomically, as an agent or an editor saves: temp name the loader ignores, then rename."""
        target = self.specs / f"{name}.yaml"
        tmp = self.specs / f".{name}.yaml.tmp"
        tmp.write_text(spec_text(name, hostname))
        os.replace(tmp, target)
        return target

    def write_specs(self, sandboxes: list[str]) -> None:
        for name in sandboxes:
            self.write_spec(name)

    def clear_specs(self) -> None:
        for path in self.specs.glob("*.yaml"):
            path.unlink()

    def reconcile(self, *args: str, timeout: float = 900) -> Timed:
        """``reconcile ARGS`` as a whole process; raises when it fails."""
        result = timed_run([*reconcile_command(), *args], self.env(), timeout)
        if result.returncode != 0:
            raise CommandFailed(
                f"reconcile {' '.join(args)} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
            )
        return result

    def settings(self):  # noqa: ANN201 - reconciler.settings.Settings
        from reconciler.settings import Settings

        return Settings(specs=self.specs, traefik_dir=self.traefik_dir, instance=self.instance,
                        state_dir=self.state_dir, web_port=self.web_port)


def remove_owned(client, label: str, value: str) -> list[str]:  # noqa: ANN001 - docker.APIClient
    """Remove every container, network and volume with ``label=value``; what could not be removed."""
    import docker.errors

    left: list[str] = []

    def remove(what: str, fn, *args, **kwargs) -> None:  # noqa: ANN001
        # A network can still report "active endpoints" just after its containers went.
        for attempt in range(20):
            try:
                fn(*args, **kwargs)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if attempt == 19:
                    left.append(f"{what}: {exc}")
                    return
                time.sleep(0.1)

    selector = {"label": f"{label}={value}"}
    with ThreadPoolExecutor(max_workers=8) as pool:
        containers = client.containers(all=True, filters=selector)
        list(pool.map(lambda c: remove(f"container {c['Id'][:12]}", client.remove_container, c["Id"],
                                       force=True, v=True), containers))
        list(pool.map(lambda n: remove(f"network {n['Name']}", client.remove_network, n["Id"]),
                      client.networks(filters=selector)))
    for vol in (client.volumes(filters=selector) or {}).get("Volumes") or []:
        remove(f"volume {vol['Name']}", client.remove_volume, vol["Name"], force=True)
    return left
