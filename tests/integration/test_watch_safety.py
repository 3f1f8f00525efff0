"""Crash safety of ``reconcile watch`` (issue 3, done-when point 3): kill -9 in the
middle of an apply of 20, SIGTERM, one watch per instance, and a Docker daemon
outage (simulated by a socket proxy: the real daemon is shared by other tests)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from watch_helpers import Watch, containers, running, spec_yaml, until

import reconciler.labels as L
from reconciler.traefik import dynamic_filename

pytestmark = [pytest.mark.docker]


def names_of(client, instance: str) -> list[str]:  # noqa: ANN001
    return sorted(c["Labels"][L.SANDBOX] for c in containers(client, instance))


def test_kill_9_mid_apply_of_20_then_a_restart_converges_to_exactly_20(instance: str, tmp_path: Path,
                                                                        docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path, resync="2s")
    wanted = [f"s{i:02d}" for i in range(20)]
    for name in wanted:
        w.write(f"{name}.yaml", spec_yaml(name))
    try:
        w.start(wait=False)
        # Kill as soon as the first containers exist: most creates are still to come or in flight.
        until(lambda: len(containers(docker_client, instance)) >= 2, 60, "the apply under way")
        w.kill()
        at_kill = containers(docker_client, instance)
        assert len([c for c in at_kill if c["State"] == "running"]) < 20, "the apply had already finished"

        w.start()
        w.until(lambda: len([c for c in containers(docker_client, instance) if c["State"] == "running"]) == 20,
                120, "20 running sandboxes")
        time.sleep(2.5)  # one more resync: nothing else should move
        boxes = containers(docker_client, instance)
        assert names_of(docker_client, instance) == wanted  # exactly one container each: no duplicates
        assert sorted(c["Names"][0].lstrip("/") for c in boxes) == [L.container_name(instance, n) for n in wanted]
        assert all(c["State"] == "running" for c in boxes)
        nets = docker_client.api.networks(filters={"label": f"{L.INSTANCE}={instance}"})
        assert sorted(n["Name"] for n in nets) == [L.network_name(instance, n) for n in wanted]  # no leaks
        conf = YAML(typ="safe").load((w.traefik_dir / dynamic_filename(instance)).read_text())
        assert sorted(conf["http"]["routers"]) == [f"rc-{instance}-{n}" for n in wanted]
    finally:
        w.kill()


def test_sigterm_stops_within_5s_and_sandboxes_keep_running(instance: str, tmp_path: Path,
                                                           docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    for i in range(8):
        w.write(f"t{i}.yaml", spec_yaml(f"t{i}"))
    try:
        w.start()
        w.wait_event("created", timeout=30)  # in the middle of the first apply
        w.signal(signal.SIGTERM)
        assert w.proc is not None
        assert w.proc.wait(timeout=5) == 0  # issue 3: "SIGTERM stops cleanly within 5 s"
        assert w.seen("stopped")
        made = containers(docker_client, instance)
        assert made and all(c["State"] == "running" for c in made)  # stopping the loop deletes nothing

        # Idle, it stops just as well; and a restart finishes the job.
        w.start()
        w.until(lambda: len([c for c in containers(docker_client, instance) if c["State"] == "running"]) == 8,
                90, "8 running sandboxes")
        w.wait_event("ready", "t7", timeout=30)
        w.signal(signal.SIGTERM)
        assert w.proc.wait(timeout=5) == 0
        assert len([c for c in containers(docker_client, instance) if c["State"] == "running"]) == 8
    finally:
        w.kill()


def test_a_second_watch_of_the_same_instance_and_state_dir_exits_with_a_clear_message(
    instance: str, tmp_path: Path
) -> None:
    first = Watch(instance, tmp_path).start()
    try:
        assert first.proc is not None
        second = first.cli("watch", "--resync", "1s")
        assert second.returncode == 1
        assert f'another "reconcile watch" is already running for instance "{instance}"' in second.stderr
        assert f"(pid {first.proc.pid})" in second.stderr
        assert first.proc.poll() is None  # the first one is unharmed
        # A one-shot apply would fight the loop over the same containers: refused.
        apply = first.cli("apply")
        assert apply.returncode == 1
        assert "a watch loop manages instance" in apply.stderr
        assert first.cli("apply", "--force").returncode == 0
    finally:
        assert first.stop() == 0
    again = Watch(instance, tmp_path).start()  # the lock is free once the first one is gone
    again.kill()
    third = Watch(instance, tmp_path).start()  # and after a kill -9 too: the kernel drops the flock
    assert third.stop() == 0


class DockerProxy:
    """A unix socket in front of the Docker daemon. ``outage()`` drops every
    connection and refuses new ones, as a daemon restart does to its clients."""

    def __init__(self, path: Path, upstream: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.upstream = upstream
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> DockerProxy:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def outage(self) -> None:
        assert self._server is not None
        self._server.close()
        self.path.unlink()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()


def test_a_docker_daemon_outage_is_survived(instance: str, tmp_path: Path, docker_client) -> None:  # noqa: ANN001
    proxy = DockerProxy(tmp_path / "docker.sock").start()
    # A 30 s resync: only the reconnected event stream (and its catch-up pass) can act in time.
    w = Watch(instance, tmp_path, resync="30s", env={"DOCKER_HOST": f"unix://{proxy.path}"})
    w.write("web.yaml", spec_yaml("web"))
    try:
        w.start()
        w.wait_event("ready", "web")
        proxy.outage()
        # While the watcher is cut off, its sandbox disappears: it cannot hear of it.
        docker_client.api.remove_container(running(docker_client, instance, "web")["Id"], force=True)
        time.sleep(1.5)
        assert w.proc is not None and w.proc.poll() is None  # still running, reconnecting
        proxy.start()
        w.wait_event("created", "web", count=2, timeout=15)  # the catch-up pass after reconnecting
        until(lambda: running(docker_client, instance, "web"), 10, "the sandbox back")
        # The event stream is live again: a removal is repaired without waiting for a resync.
        docker_client.api.remove_container(running(docker_client, instance, "web")["Id"], force=True)
        w.wait_event("created", "web", count=3, timeout=10)
        until(lambda: running(docker_client, instance, "web"), 10, "the sandbox back again")
    finally:
        w.kill()
        proxy.stop()
    assert os.path.exists(tmp_path / "state" / f"{instance}.db")
