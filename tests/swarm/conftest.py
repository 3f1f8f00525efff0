"""Fixtures of the swarm engine's tests: one local 3-node swarm per session (see
tests/swarm_fixture.py) and a per-test instance whose swarm objects are removed afterwards."""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reconciler.labels as L  # noqa: E402
from core_helpers import Reconcile  # noqa: E402
from swarm_fixture import LocalSwarm, build_swarm  # noqa: E402


@pytest.fixture(scope="session")
def swarm(docker_client) -> Iterator[LocalSwarm]:  # noqa: ANN001
    """A manager and two workers, each its own dockerd in its own namespaces; the
    main engine only lends its test image. Torn down, and checked clean, at the end."""
    built = build_swarm(main=docker_client)
    print(f"swarm {built.id} built in {built.build_seconds:.1f}s on {built.subnet}")
    try:
        yield built
    finally:
        began = time.monotonic()
        problems = built.teardown()
        print(f"swarm {built.id} torn down in {time.monotonic() - began:.1f}s")
        assert not problems, f"swarm teardown left or had to force: {problems}"


@pytest.fixture
def swarm_instance(swarm: LocalSwarm) -> Iterator[str]:
    """A unique instance; its services, configs, networks and volumes are removed afterwards."""
    name = "s" + secrets.token_hex(4)
    yield name
    errors = remove_swarm_instance(swarm, name)
    assert not errors, f"cleanup of instance {name} failed: {errors}"


@pytest.fixture
def src(tmp_path: Path, swarm: LocalSwarm, swarm_instance: str) -> Reconcile:
    """``reconcile --engine swarm`` for this test's instance, every node's engine reachable."""
    rc = Reconcile(tmp_path, swarm_instance)
    rc.env.update(swarm.env())
    return rc


def remove_swarm_instance(swarm: LocalSwarm, instance: str) -> list[str]:
    import docker.errors

    label = f"{L.INSTANCE}={instance}"
    errors: list[str] = []
    manager = swarm.manager.client()
    try:
        api = manager.api
        for svc in api.services(filters={"label": label}):
            _attempt(errors, api.remove_service, svc["ID"])
        for cfg in api.configs(filters={"label": label}):
            _attempt(errors, api.remove_config, cfg["ID"])
        for net in api.networks(filters={"label": label}):
            for _ in range(50):  # a removed service's tasks let go of it within moments
                try:
                    api.remove_network(net["Id"])
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    time.sleep(0.1)
            else:
                errors.append(f"network {net['Name']} still in use")
    finally:
        manager.close()
    for node in swarm.nodes.values():
        if not node.running:
            continue
        client = node.client()
        try:
            for c in client.api.containers(all=True, filters={"label": label}):
                _attempt(errors, client.api.remove_container, c["Id"], force=True)
            for vol in client.api.volumes(filters={"label": label}).get("Volumes") or ():
                _attempt(errors, client.api.remove_volume, vol["Name"], force=True)
        finally:
            client.close()
    return errors


def _attempt(errors: list[str], fn, *args, **kwargs) -> None:  # noqa: ANN001
    import docker.errors

    try:
        fn(*args, **kwargs)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        errors.append(str(exc))
