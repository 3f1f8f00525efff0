"""TTL under ``reconcile watch`` with short TTLs (issue 3, done-when point 2), and
the one-shot ``reconcile gc``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from watch_helpers import Watch, containers, host_of, running, spec_yaml, until

import reconciler.labels as L
from reconciler.lifetime import iso

pytestmark = [pytest.mark.docker]


def born_at(client, instance: str, name: str) -> int:  # noqa: ANN001
    box = running(client, instance, name)
    assert box is not None, f"{name} is not running"
    return int(box["Labels"][L.CREATED_AT])


@pytest.mark.traefik
def test_expiry_removes_sandbox_and_route_and_it_stays_gone(instance: str, tmp_path: Path, traefik,
                                                            docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path, traefik_dir=traefik.dynamic_dir)
    w.write("short.yaml", spec_yaml("short", ttl="5s"))
    try:
        w.start()
        w.wait_event("ready", "short")
        host = host_of(w, "short")
        traefik.wait_status(host, 200)
        born = born_at(docker_client, instance, "short")
        expired = w.wait_event("expired", "short", timeout=15)
        assert expired["message"] == f"ttl expired {iso(born + 5)}"
        traefik.wait_status(host, 404)
        until(lambda: not containers(docker_client, instance, "short"), 10, "the container gone")
        assert docker_client.api.networks(filters={"label": f"{L.INSTANCE}={instance}"}) == []
        time.sleep(3)  # three resyncs: an unchanged spec is not brought back
        assert containers(docker_client, instance, "short") == []
        assert len(w.seen("created", "short")) == 1
        row = w.status()["short"]
        assert row["state"] == "expired"
        assert row["time_left"] == f"expired {iso(born + 5)}"
        stalled = next(c for c in row["status"]["conditions"] if c["type"] == "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", "Expired")
        plan = w.cli("plan")
        assert f"  ! short (ttl expired {iso(born + 5)}" in plan.stdout
        assert "No changes." in plan.stdout
    finally:
        w.kill()


def test_extend_pushes_the_expiry_and_brings_an_expired_sandbox_back(instance: str, tmp_path: Path,
                                                                      docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    # Long enough for the extend below to land before the first expiry on a busy machine.
    w.write("ext.yaml", spec_yaml("ext", ttl="8s", port=None, command="exec sleep 1000"))
    try:
        w.start()
        w.wait_event("ready", "ext")
        born = born_at(docker_client, instance, "ext")
        out = w.cli("extend", "ext", "4s", "--output", "json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["expires_at"] == iso(born + 12)
        # Past the first expiry it still runs...
        until(lambda: time.time() > born + 8 + 1.5, 15)
        assert running(docker_client, instance, "ext") is not None
        assert w.seen("expired", "ext") == []
        # ...and it ends at the new one.
        expired = w.wait_event("expired", "ext", timeout=15)
        assert expired["message"] == f"ttl expired {iso(born + 12)}"
        until(lambda: not containers(docker_client, instance, "ext"), 10, "the container gone")

        # Extending an expired sandbox brings it back for that long (E2B's set_timeout).
        out = w.cli("extend", "ext", "1h")
        assert out.returncode == 0, out.stderr
        w.wait_event("created", "ext", count=2, timeout=10)
        until(lambda: running(docker_client, instance, "ext"), 10, "running again")
        assert born_at(docker_client, instance, "ext") == born  # the same lifetime, longer
        assert w.status()["ext"]["time_left"].startswith(("in 59m", "in 1h"))
    finally:
        w.kill()
    events = json.loads(w.cli("events", "--output", "json", "--name", "ext").stdout)
    assert [e["kind"] for e in events].count("extended") == 2


def test_extend_errors_are_clear(instance: str, tmp_path: Path) -> None:
    w = Watch(instance, tmp_path)
    w.write("forever.yaml", spec_yaml("forever", port=None, command="exec sleep 1000"))
    out = w.cli("extend", "forever", "1h")
    assert out.returncode == 1 and "has no ttl" in out.stderr
    out = w.cli("extend", "nobody", "1h")
    assert out.returncode == 3 and 'no valid spec for sandbox "nobody"' in out.stderr
    out = w.cli("extend", "forever", "soon")
    assert out.returncode == 2 and "expected a duration" in out.stderr


def test_a_restart_of_the_reconciler_does_not_reset_the_lifetime(instance: str, tmp_path: Path,
                                                                  docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    w.write("keep.yaml", spec_yaml("keep", ttl="9s", port=None, command="exec sleep 1000"))
    try:
        w.start()
        w.wait_event("ready", "keep")
        born = born_at(docker_client, instance, "keep")
        # A recreate (here: after a removal from outside) keeps the lifetime too.
        docker_client.api.remove_container(running(docker_client, instance, "keep")["Id"], force=True)
        w.wait_event("created", "keep", count=2)
        until(lambda: running(docker_client, instance, "keep"), 10, "back after rm -f")
        assert born_at(docker_client, instance, "keep") == born
        assert w.stop() == 0
        time.sleep(1)
        w.start()  # the store remembers
        until(lambda: w.status()["keep"]["expires"] == iso(born + 9), 5, "the same expiry after a restart")
        assert w.stop() == 0
        shutil.rmtree(w.state_dir)  # even without the store, the container's labels remember
        w.start()
        expired = w.wait_event("expired", "keep", timeout=15)
        assert expired["message"] == f"ttl expired {iso(born + 9)}"
        assert len(w.seen("created", "keep")) == 0  # nothing was recreated by the restarts
    finally:
        w.kill()


def test_editing_the_spec_starts_a_new_lifetime(instance: str, tmp_path: Path, docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    w.write("edit.yaml", spec_yaml("edit", ttl="3s", port=None, command="exec sleep 1000"))
    try:
        w.start()
        w.wait_event("ready", "edit")
        first = born_at(docker_client, instance, "edit")
        w.wait_event("expired", "edit", timeout=15)
        until(lambda: not containers(docker_client, instance, "edit"), 10, "the container gone")
        w.write("edit.yaml", spec_yaml("edit", ttl="3s", port=None, command="exec sleep 1000", env={"V": "2"}))
        w.wait_event("created", "edit", count=2, timeout=10)
        until(lambda: running(docker_client, instance, "edit"), 10, "running again")
        second = born_at(docker_client, instance, "edit")
        assert second > first
        expired = w.wait_event("expired", "edit", count=2, timeout=15)
        assert expired["message"] == f"ttl expired {iso(second + 3)}"
    finally:
        w.kill()


def test_apply_respects_expiry_and_gc_sweeps_expired_and_orphans(instance: str, tmp_path: Path,
                                                                 docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    w.write("brief.yaml", spec_yaml("brief", ttl="2s", port=None, command="exec sleep 1000"))
    w.write("stay.yaml", spec_yaml("stay", port=None, command="exec sleep 1000"))
    out = w.cli("apply")
    assert out.returncode == 0, out.stdout + out.stderr
    api = docker_client.api
    owned = {L.MANAGED: "true", L.INSTANCE: instance, L.SANDBOX: "ghost", L.KIND: "sandbox"}
    orphan = api.create_container("reconciler-test/busybox:latest", ["sleep", "1000"], labels=owned,
                                  name=f"{instance}-ghost")["Id"]
    born = born_at(docker_client, instance, "brief")
    until(lambda: time.time() > born + 2.2, 10)
    plan = w.cli("plan")
    assert f"  - brief (ttl expired {iso(born + 2)})" in plan.stdout
    out = w.cli("gc")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"  - brief (ttl expired {iso(born + 2)}): done" in out.stdout
    assert "  - ghost (no spec): done" in out.stdout
    assert containers(docker_client, instance, "brief") == []
    assert not [c for c in api.containers(all=True) if c["Id"] == orphan]
    assert running(docker_client, instance, "stay") is not None  # gc creates and removes nothing else
    again = w.cli("apply")
    assert again.returncode == 0 and "No changes." in again.stdout  # expired: not recreated
    assert containers(docker_client, instance, "brief") == []
    kinds = [e["kind"] for e in json.loads(w.cli("events", "--output", "json").stdout)]
    assert "expired" in kinds and "destroyed" in kinds
