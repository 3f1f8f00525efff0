"""Helpers for the core tests that drive ``reconcile`` against the real engine
(import as ``core_helpers``): a specs dir + CLI runner per test, busybox specs,
and looks at what the engine holds."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import requests

import helpers
import reconciler.labels as L

BUSYBOX = "reconciler-test/busybox:latest"
HTTPD = ["httpd", "-f", "-p", "8000", "-h", "/www"]


def httpd_spec(name: str, page: str | None = None, source: str | None = None, command: list[str] | None = None,
               extra: str = "", image: str = BUSYBOX) -> str:
    """A small busybox httpd sandbox on port 8000 serving ``/www`` (inline ``page`` or ``source`` dir)."""
    if source is not None:
        upload = f"    - source: {source}\n      target: /www\n"
    else:
        text = (page if page is not None else f"hello from {name}\n").replace("\n", "\\n")
        upload = f'    - content: "{text}"\n      target: /www/index.html\n'
    cmd = ", ".join(f'"{part}"' for part in (command or HTTPD))
    return (
        "apiVersion: reconciler/v1\n"
        "kind: Sandbox\n"
        "metadata:\n"
        f"  name: {name}\n"
        "spec:\n"
        f"  image: {image}\n"
        f"  command: [{cmd}]\n"
        "  port: 8000\n"
        "  resources: {memory: 64m, cpus: 0.5, pids: 64}\n"
        f"  uploads:\n{upload}"
        f"{extra}"
    )


class Reconcile:
    """``reconcile`` as a subprocess, for one instance with its own specs and Traefik dirs."""

    def __init__(self, tmp_path: Path, instance: str, traefik_dir: Path | None = None, web_port: int = 8080) -> None:
        self.instance = instance
        self.specs = tmp_path / "specs"
        self.specs.mkdir(exist_ok=True)
        self.traefik_dir = traefik_dir or tmp_path / "dynamic"
        self.cwd = tmp_path
        self.env = {
            "RECONCILER_INSTANCE": instance,
            "RECONCILER_SPECS": str(self.specs),
            "RECONCILER_TRAEFIK_DIR": str(self.traefik_dir),
            "RECONCILER_STATE_DIR": str(tmp_path / "state"),
            "RECONCILER_WEB_PORT": str(web_port),
            "RECONCILER_DOMAIN": "localhost",
        }

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return helpers.run_cli(list(args), env=self.env, cwd=self.cwd, timeout=120)

    def expect(self, code: int, *args: str) -> str:
        """Run and assert the exit code; return stdout."""
        result = self(*args)
        assert result.returncode == code, (
            f"reconcile {' '.join(args)}: exit {result.returncode}, expected {code}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
        return result.stdout

    def write(self, name: str, text: str) -> Path:
        path = self.specs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def remove(self, name: str) -> None:
        (self.specs / name).unlink()

    @property
    def dynamic_file(self) -> Path:
        name = "dynamic-conf.yml" if self.instance == "default" else f"dynamic-conf-{self.instance}.yml"
        return self.traefik_dir / name


def owned(client: Any, instance: str) -> dict[str, dict[str, Any]]:
    """This instance's containers by sandbox name, as the list API returns them."""
    found = client.api.containers(all=True, filters={"label": L.selector(instance)})
    return {c["Labels"][L.SANDBOX]: c for c in found}


def ip_of(raw: dict[str, Any], instance: str) -> str:
    network = L.network_name(instance, raw["Labels"][L.SANDBOX])
    return raw["NetworkSettings"]["Networks"][network]["IPAddress"]


def page(ip: str, port: int = 8000, path: str = "/") -> str:
    """GET a sandbox directly at its container address (the host can, sandboxes cannot)."""
    def fetch() -> str | None:
        resp = requests.get(f"http://{ip}:{port}{path}", timeout=2)
        return resp.text if resp.status_code == 200 else None

    return helpers.wait_until(fetch, timeout=10, message=f"http://{ip}:{port}{path} to answer 200")


def networks(client: Any, instance: str) -> set[str]:
    return {n["Name"] for n in client.api.networks(filters={"label": L.selector(instance)})}
