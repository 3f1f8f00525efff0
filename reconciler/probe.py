"""Readiness: a sandbox is routed only once its port answers (or its health path
returns 2xx/3xx), so Traefik never sends a user to a sandbox still starting."""

from __future__ import annotations

import http.client
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from .observed import ObservedSandbox


def is_ready(sb: ObservedSandbox, timeout: float = 0.5) -> bool:
    """True when the sandbox answers on its port (and health path, if it has one)."""
    if not sb.running or not sb.ip or not sb.port:
        return False
    if sb.health_path:
        conn = http.client.HTTPConnection(sb.ip, sb.port, timeout=timeout)
        try:
            conn.request("GET", sb.health_path, headers={"Host": sb.hostname or sb.ip})
            return conn.getresponse().status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
    try:
        with socket.create_connection((sb.ip, sb.port), timeout=timeout):
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
