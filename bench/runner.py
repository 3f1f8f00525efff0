"""What every case shares: sizes for the mode, the peers, a Docker client, a
real Traefik per case, HTTP probes through it, and cleanup of everything the
run made (by instance label and compose project label)."""

from __future__ import annotations

import http.client
import json
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .peers import Peer
from .workload import INSTANCE_LABEL, PROJECT_LABEL, Workspace, remove_owned

Say = Callable[[str], None]


@dataclass(frozen=True)
class Sizes:
    """How much each case does. The full sizes are the issue's; quick ones prove the suite works."""

    cold: tuple[int, int] = (20, 50)
    cold_runs: tuple[int, int] = (3, 3)
    noop_specs: int = 20
    noop_runs: int = 10
    pass_sizes: tuple[int, int, int] = (20, 300, 1000)
    pass_runs: int = 20
    scale: int = 300
    reload_runs: int = 5
    idle_sandboxes: int = 50
    idle_seconds: float = 60.0
    routable_runs: int = 20
    drift_runs: int = 10


FULL = Sizes()
QUICK = Sizes(
    cold=(2, 4),
    cold_runs=(1, 1),
    noop_specs=3,
    noop_runs=3,
    pass_sizes=(3, 10, 100),
    pass_runs=5,
    scale=10,
    reload_runs=2,
    idle_sandboxes=5,
    idle_seconds=10.0,
    routable_runs=3,
    drift_runs=3,
)


class Traefik:
    """A real Traefik (reconciler.traefik_proc) on free loopback ports, watching one directory."""

    def __init__(self, dynamic_dir: Path, log_file: Path) -> None:
        from reconciler.traefik_proc import TraefikOptions, start_traefik, wait_ready

        self.web_port, self.api_port = _free_port(), _free_port()
        while self.api_port == self.web_port:
            self.api_port = _free_port()
        opts = TraefikOptions(dynamic_dir=dynamic_dir, web_address=f"127.0.0.1:{self.web_port}",
                              api_address=f"127.0.0.1:{self.api_port}", log_file=log_file)
        self.proc = start_traefik(opts)
        wait_ready(opts.api_address, timeout=15.0, proc=self.proc)

    def status(self, host: str, timeout: float = 2.0) -> int:
        """HTTP status of ``GET /`` with ``Host: host`` through the web entrypoint; 0 when no answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        try:
            conn.request("GET", "/", headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return 0
        finally:
            conn.close()

    def wait_status(self, host: str, status: int, timeout: float = 30.0, interval: float = 0.005) -> float:
        """Poll until ``host`` answers ``status``; the monotonic time it first did.

        Each request gives up after 250 ms and the next one is sent: a request
        that Traefik forwards to a sandbox's address while no container has it
        waits for TCP's 1 s SYN retry, which would time the retry, not the repair."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.status(host, timeout=0.25)
            now = time.monotonic()
            if got == status:
                return now
            if now > deadline:
                raise TimeoutError(f"{host} did not answer {status} through Traefik in {timeout:.0f}s (last {got})")
            time.sleep(interval)

    def enabled_routers(self, provider: str = "file") -> set[str]:
        """Names of the routers Traefik's API lists as enabled (paged: the API returns 100 per page)."""
        names: set[str] = set()
        page = 1
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=5)
            try:
                conn.request("GET", f"/api/http/routers?per_page=500&page={page}")
                resp = conn.getresponse()
                body = json.loads(resp.read() or b"[]")
                next_page = resp.getheader("X-Next-Page")
            finally:
                conn.close()
            for r in body:
                if r.get("provider") == provider and r.get("status") == "enabled":
                    names.add(r["name"].split("@", 1)[0])
            if not next_page or next_page == "1" or int(next_page) <= page:
                return names
            page = int(next_page)

    def stop(self) -> None:
        from reconciler.traefik_proc import stop_traefik

        stop_traefik(self.proc)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Bench:
    """One run of the suite."""

    root: Path
    sizes: Sizes
    peers: list[Peer]
    say: Say
    api: object  # docker.APIClient
    owned: list[tuple[str, str]] = field(default_factory=list)  # (label, value) to clean up
    stuck: list[str] = field(default_factory=list)  # networks dockerd refused to remove (stale endpoints)

    def workspace(self, prefix: str = "bench") -> Workspace:
        ws = Workspace.create(self.root, prefix)
        self.owned.append((INSTANCE_LABEL, ws.instance))
        return ws

    def project(self, prefix: str = "rcb", label: str = PROJECT_LABEL) -> str:
        """A unique name, and everything labelled ``label=<name>`` is removed at the end."""
        from .workload import unique

        name = unique(prefix)
        self.owned.append((label, name))
        return name

    @contextmanager
    def traefik(self, ws: Workspace) -> Iterator[Traefik]:
        t = Traefik(ws.traefik_dir, ws.root / "traefik.log")
        ws.web_port = t.web_port
        try:
            yield t
        finally:
            t.stop()

    def running(self, label: str, value: str) -> int:
        """How many running containers carry ``label=value``."""
        flt = {"label": f"{label}={value}", "status": "running"}
        return len(self.api.containers(filters=flt))  # type: ignore[attr-defined]

    def owned_count(self, instance: str) -> int:
        """Containers, networks and volumes left with this instance's label."""
        flt = {"label": f"{INSTANCE_LABEL}={instance}"}
        api = self.api
        vols = (api.volumes(filters=flt) or {}).get("Volumes") or []  # type: ignore[attr-defined]
        return (len(api.containers(all=True, filters=flt)) + len(api.networks(filters=flt))  # type: ignore[attr-defined]
                + len(vols))

    def cleanup(self) -> None:
        """Remove whatever a case left behind, even after a failure."""
        for label, value in self.owned:
            try:
                problems = remove_owned(self.api, label, value)
            except Exception as exc:  # noqa: BLE001 - e.g. the daemon restarting: say so, keep the report
                problems = [f"everything labelled {label}={value} ({type(exc).__name__}: {exc})"]
            for problem in problems:
                self.say(f"cleanup: could not remove {problem}")
