"""What machine the figures come from: they mean little without it."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=cwd, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError):
        pass
    return "unknown"


def _git() -> str:
    commit = _run(["git", "rev-parse", "--short", "HEAD"], REPO)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], REPO)
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def describe(docker_version: str, traefik_version: str, compose_v2: str, compose_v1: str) -> list[tuple[str, str]]:
    """(what, value) pairs for the report's machine section."""
    return [
        ("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
        ("cores", f"{os.cpu_count()} × {_cpu_model()}"),
        ("memory", _memory()),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("Docker engine", docker_version),
        ("Traefik", traefik_version),
        ("Python", platform.python_version()),
        ("Docker Compose v2", compose_v2),
        ("Docker Compose v1", compose_v1),
        ("reconciler commit", _git()),
    ]


def traefik_version(binary: str) -> str:
    for line in _run([binary, "version"]).splitlines():
        if line.lower().startswith("version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"
