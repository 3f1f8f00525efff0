"""Readiness: a sandbox is routed only once its port answers (or its health path
returns 2xx/3xx), so Traefik never sends a user to a sandbox still starting."""

from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from .observed import ObservedSandbox


def is_ready(sb: ObservedSandbox, timeout: float = 0.5) -> bool:
    """True when the sandbox answers on its port (and health path, if it has one)."""
    target = sb.route_target  # the router's address and port (on swarm: the node's published port)
    if not sb.running or target is None:
        return False
    if sb.health_path:
        conn = http.client.HTTPConnection(*target, timeout=timeout)
        try:
            conn.request("GET", sb.health_path, headers={"Host": sb.hostname or target[0]})
            return conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
    try:
        with socket.create_connection(target, timeout=timeout):
            return True
    except OSError:
        return False


def ready_set(sandboxes: Iterable[ObservedSandbox], timeout: float = 0.5, workers: int = 16) -> set[str]:
    """Names of the sandboxes that answer now, probed in parallel."""
    candidates = [sb for sb in sandboxes if sb.running and sb.ip and sb.port]
    if not candidates:
        return set()
    with ThreadPoolExecutor(max_workers=min(workers, len(candidates))) as pool:
        answers = list(pool.map(lambda sb: is_ready(sb, timeout), candidates))
    return {sb.name for sb, ok in zip(candidates, answers) if ok}


@dataclass
class ReadyCache:
    """Containers that have answered once are not probed again while they run.

    A probe is a TCP connect into the container's network: measured ~0.5 ms of
    kernel time each with 300 sandbox networks, so probing every sandbox on every
    resync pass cost ~150 ms at 300. A container is known by its id and where it
    answers (a swarm service keeps its id when its task moves to another node): a
    recreated, restarted-elsewhere or removed one is probed afresh."""

    answered: frozenset[tuple[str, str | None]] = frozenset()  # (container id, endpoint)

    def ready_set(self, sandboxes: Iterable[ObservedSandbox], timeout: float = 0.5) -> set[str]:
        running = [sb for sb in sandboxes if sb.running and sb.ip and sb.port]
        known = {sb.name for sb in running if (sb.container_id, sb.endpoint) in self.answered}
        fresh = [sb for sb in running if (sb.container_id, sb.endpoint) not in self.answered]
        ready = known | ready_set(fresh, timeout)
        self.answered = frozenset((sb.container_id, sb.endpoint) for sb in running if sb.name in ready)
        return ready
