"""Fixtures shared by the integration and e2e tests: Docker, a per-test instance, Traefik."""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import docker

# Tests import their helpers as ``import helpers``; make that work whatever
# pytest's import mode or a later tests/__init__.py does to sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
import reconciler.labels as L  # noqa: E402
from reconciler.traefik_proc import (  # noqa: E402
    TraefikError,
    TraefikOptions,
    start_traefik,
    stop_traefik,
    wait_ready,
)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A docker-py client for the local engine; fails (never skips) without one."""
    import docker  # here, so unit-only runs never pay for it

    problem = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        # Outside the except block, so the report is one line, not a chain.
        pytest.fail(f"Docker daemon not reachable ({problem}); "
                    "run scripts/setup to install and start it", pytrace=False)
    _sweep_stale_test_instances(client)
    yield client
    client.close()


TEST_INSTANCE = re.compile(r"t[0-9a-f]{8}")
STALE_AFTER = 3 * 3600  # seconds: far beyond any run (CI stops a run at 90 minutes)


def _sweep_stale_test_instances(client) -> None:  # noqa: ANN001
    """Remove what test instances of runs that died long ago left (a killed run skips
    its fixtures' teardown): only names of the ``instance`` fixture's form, and only
    when their newest container is hours old, so a run going on beside this one keeps
    its things. Left behind, 300 containers of a killed scale test slow every test."""
    newest: dict[str, float] = {}
    for c in client.api.containers(all=True, filters={"label": L.INSTANCE}):
        name = (c.get("Labels") or {}).get(L.INSTANCE, "")
        if TEST_INSTANCE.fullmatch(name):
            newest[name] = max(newest.get(name, 0.0), float(c.get("Created") or 0))
    cutoff = time.time() - STALE_AFTER
    for name, created in sorted(newest.items()):
        if created < cutoff:
            _remove_instance(client, name)


@pytest.fixture
def instance(docker_client) -> Iterator[str]:
    """A unique instance name (``t`` + 8 hex); everything it owns is removed afterwards."""
    name = "t" + secrets.token_hex(4)
    yield name
    errors = _remove_instance(docker_client, name)
    if errors:
        pytest.fail(f"cleanup of instance {name} failed:\n" + "\n".join(errors), pytrace=False)


def _remove_instance(client, instance: str) -> list[str]:
    """Remove what ``instance`` owns: containers, then networks, then volumes."""
    import docker.errors

    api = client.api
    label = f"{L.INSTANCE}={instance}"
    errors: list[str] = []

    def attempt(what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except docker.errors.NotFound:
            pass  # already gone: that is the goal
        except docker.errors.APIError as exc:
            errors.append(f"{what}: {exc}")

    containers = {c["Id"]: c for c in api.containers(all=True, filters={"label": label})}
    # The name filter is a substring match: check the prefix ourselves.
    for c in api.containers(all=True, filters={"name": instance}):
        if any(n.lstrip("/").startswith(f"{instance}-") for n in c.get("Names") or ()):
            containers[c["Id"]] = c
    for cid in containers:
        attempt(f"container {cid[:12]}", api.remove_container, cid, force=True, v=True)
    for net in api.networks(filters={"label": label}):
        attempt(f"network {net['Name']}", api.remove_network, net["Id"])
    for vol in api.volumes(filters={"label": label}).get("Volumes") or ():
        attempt(f"volume {vol['Name']}", api.remove_volume, vol["Name"], force=True)
    return errors


@pytest.fixture
def traefik(tmp_path: Path) -> Iterator[helpers.TraefikHandle]:
    """The real Traefik on free loopback ports, watching a fresh ``dynamic_dir``."""
    dynamic_dir = tmp_path / "dynamic"
    dynamic_dir.mkdir()
    log_file = tmp_path / "traefik.log"
    handle = None
    # free_port() can race with another process taking the port before Traefik
    # binds it: a start that dies early is retried on new ports.
    for attempt in range(3):
        web_port, api_port = helpers.free_port(), helpers.free_port()
        while api_port == web_port:
            api_port = helpers.free_port()
        opts = TraefikOptions(dynamic_dir=dynamic_dir, web_address=f"127.0.0.1:{web_port}",
                              api_address=f"127.0.0.1:{api_port}", log_file=log_file)
        proc = start_traefik(opts)
        try:
            wait_ready(opts.api_address, timeout=10.0, proc=proc)
        except TraefikError as exc:
            stop_traefik(proc)
            if attempt == 2:
                tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
                pytest.fail(f"{exc}\n--- Traefik log ---\n{tail}", pytrace=False)
            continue
        handle = helpers.TraefikHandle(proc, web_port, api_port, dynamic_dir, log_file)
        break
    assert handle is not None
    try:
        yield handle
    finally:
        stop_traefik(handle.proc)
        # Captured, so shown only when the test fails.
        print(f"--- Traefik log tail ({log_file}) ---\n{handle.log_tail()}")
