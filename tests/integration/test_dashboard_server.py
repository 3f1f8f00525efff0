"""The dashboard served for real (uvicorn on loopback) over the real Docker engine.

Two set-ups, as users run it: ``serve`` alone (the dashboard converges one
sandbox itself for each write) and beside an in-process watch loop, as under
``reconcile up`` (the writes leave the converging to the loop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import run_cli, wait_until
from reconciler.cli import context_for
from reconciler.dashboard.route import route_filename
from reconciler.dashboard.server import DashboardServer, serve_in_thread
from reconciler.settings import Settings

pytestmark = pytest.mark.docker

TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUSYBOX = "reconciler-test/busybox:latest"


def spec(name: str, ttl: str = "10m", env: str = "1") -> str:
    return (
        "apiVersion: reconciler/v1\nkind: Sandbox\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  image: {BUSYBOX}\n"
        "  command: [sh, -c, 'mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 8000 -h /www']\n"
        "  port: 8000\n"
        f"  ttl: {ttl}\n"
        f"  env: {{V: \"{env}\"}}\n"
    )


def settings_for(tmp_path: Path, instance: str) -> Settings:
    for d in ("specs", "dynamic", "state"):
        (tmp_path / d).mkdir(exist_ok=True)
    return Settings(specs=tmp_path / "specs", traefik_dir=tmp_path / "dynamic", state_dir=tmp_path / "state",
                    instance=instance, ready_timeout=20)


def cli_args(settings: Settings) -> list[str]:
    return ["--specs", str(settings.specs), "--traefik-dir", str(settings.traefik_dir),
            "--state-dir", str(settings.state_dir), "--instance", settings.instance]


def row(server: DashboardServer, name: str) -> dict | None:
    body = requests.get(f"{server.url}/api/sandboxes/{name}", timeout=10)
    return body.json() if body.status_code == 200 else None


def metric(server: DashboardServer, name: str, **labels: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def event_kinds(server: DashboardServer, name: str) -> list[str]:
    return [e["kind"] for e in requests.get(f"{server.url}/api/events", timeout=10).json() if e["sandbox"] == name]


@pytest.fixture
def alone(tmp_path, instance) -> Iterator[tuple[DashboardServer, Settings]]:
    """``reconcile serve`` alone: no watch loop."""
    settings = settings_for(tmp_path, instance)
    server = serve_in_thread(context_for(settings), "127.0.0.1", 0, TOKEN)
    try:
        yield server, settings
    finally:
        server.stop()


@pytest.fixture
def with_loop(tmp_path, instance) -> Iterator[tuple[DashboardServer, Settings]]:
    """The dashboard beside an in-process watch loop, wired as ``reconcile up`` wires them."""
    from reconciler.loop import run_watch

    settings = settings_for(tmp_path, instance)
    ctx = context_for(settings)
    stop = threading.Event()
    server = serve_in_thread(ctx, "127.0.0.1", 0, TOKEN, stop)
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            run_watch(ctx, stop, resync_interval=2.0, on_pass=server.dashboard.metrics.record_pass)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server, settings
    finally:
        stop.set()
        thread.join(10)
        server.stop()
    assert not failure, failure
    assert not thread.is_alive(), "the watch loop did not stop"


def test_serve_alone_shows_plan_then_sandbox_then_extends_recreates_deletes(alone):
    server, settings = alone
    (settings.specs / "web.yaml").write_text(spec("web"))

    # Not applied yet: the row is pending, and the plan says what an apply would do.
    pending = row(server, "web")
    assert pending["state"] == "pending" and pending["pending"]["action"] == "create"
    plan = requests.get(f"{server.url}/api/plan", timeout=10).json()
    assert [(c["action"], c["name"]) for c in plan["changes"]] == [("create", "web")]
    assert metric(server, "reconciler_changes_total", action="create") == 0

    applied = run_cli(["apply", *cli_args(settings)])
    assert applied.returncode == 0, applied.stderr
    ready = wait_until(lambda: (r := row(server, "web")) and r["state"] == "ready" and r, timeout=10,
                       message="web ready on the dashboard")
    assert ready["url"].startswith("http://qa-") and ready["image"] == BUSYBOX
    assert ready["memory_bytes"] and ready["memory_bytes"] > 0  # read from the container's cgroup
    assert 590 <= ready["ttl_left_seconds"] <= 600
    wait_until(lambda: row(server, "web")["cpu_percent"] is not None, timeout=5, message="a CPU rate")
    assert metric(server, "reconciler_changes_total", action="create") == 1
    assert metric(server, "reconciler_sandboxes", state="ready") == 1

    # Extend: the expiry moves by exactly what was asked, and the log says so.
    extended = requests.post(f"{server.url}/api/sandboxes/web/extend", json={"seconds": 3600}, headers=AUTH,
                             timeout=30)
    assert extended.status_code == 200, extended.text
    assert extended.json()["expires_at"] == pytest.approx(ready["expires_at"] + 3600, abs=0.01)
    assert row(server, "web")["expires_at"] == pytest.approx(ready["expires_at"] + 3600, abs=0.01)
    assert "extended" in event_kinds(server, "web")

    # Recreate: a new container, the same lifetime.
    recreated = requests.post(f"{server.url}/api/sandboxes/web/recreate", json={}, headers=AUTH, timeout=60)
    assert recreated.status_code == 200, recreated.text
    after = row(server, "web")
    assert after["container_id"] != ready["container_id"]
    assert after["state"] == "ready"
    assert after["expires_at"] == pytest.approx(ready["expires_at"] + 3600, abs=0.01)
    assert "requested" in event_kinds(server, "web")

    # Delete: spec file, container and row gone; the counters moved.
    deleted = requests.delete(f"{server.url}/api/sandboxes/web", json={}, headers=AUTH, timeout=60)
    assert deleted.status_code == 200, deleted.text
    assert not (settings.specs / "web.yaml").exists()
    assert row(server, "web") is None
    assert metric(server, "reconciler_changes_total", action="destroy") == 1
    assert metric(server, "reconciler_sandboxes", state="ready") == 0


def test_refused_writes_change_nothing(alone):
    server, settings = alone
    (settings.specs / "web.yaml").write_text(spec("web"))
    assert run_cli(["apply", *cli_args(settings)]).returncode == 0
    before = wait_until(lambda: (r := row(server, "web")) and r["state"] == "ready" and r, timeout=10)
    url = f"{server.url}/api/sandboxes/web"
    attempts = {
        "no token": requests.post(f"{url}/extend", json={"seconds": 60}, timeout=10),
        "wrong token": requests.post(f"{url}/extend", json={"seconds": 60}, timeout=10,
                                     headers={"Authorization": "Bearer not-the-token-0123"}),
        "foreign origin": requests.post(f"{url}/extend", json={"seconds": 60}, timeout=10,
                                        headers={**AUTH, "Origin": "http://evil.example"}),
        "token as a cookie": requests.post(f"{url}/extend", json={"seconds": 60}, timeout=10,
                                           cookies={"token": TOKEN}),
        "delete without token": requests.delete(url, timeout=10),
        "recreate from a sandbox page": requests.post(f"{url}/recreate", json={}, timeout=10, headers={
            **AUTH, "Origin": "http://qa-0123456789ab.localhost:8080"}),
    }
    statuses = {what: r.status_code for what, r in attempts.items()}
    assert statuses == {"no token": 401, "wrong token": 401, "foreign origin": 403, "token as a cookie": 401,
                        "delete without token": 401, "recreate from a sandbox page": 403}
    time.sleep(1.1)  # past the snapshot cache
    after = row(server, "web")
    assert (after["container_id"], after["expires_at"]) == (before["container_id"], before["expires_at"])
    assert (settings.specs / "web.yaml").exists()
    assert "extended" not in event_kinds(server, "web")


def test_route_file_is_written_and_removed(tmp_path, instance):
    settings = settings_for(tmp_path, instance)
    server = serve_in_thread(context_for(settings), "127.0.0.1", 0, TOKEN)
    route_file = settings.traefik_dir / route_filename(settings)
    try:
        text = route_file.read_text()
        assert f"Host(`reconciler-{instance}.localhost`)" in text
        assert f'"http://127.0.0.1:{server.port}"' in text
        assert "{{" not in text
    finally:
        server.stop()
    assert not route_file.exists()


def test_with_the_loop_writes_leave_the_converging_to_it(with_loop):
    server, settings = with_loop
    (settings.specs / "web.yaml").write_text(spec("web"))
    first = wait_until(lambda: (r := row(server, "web")) and r["state"] == "ready" and r, timeout=20,
                       message="web ready through the loop")
    # The loop's passes feed the histograms; the events log feeds the counters.
    wait_until(lambda: metric(server, "reconciler_spec_to_ready_seconds_count") >= 1, timeout=5)
    assert metric(server, "reconciler_reconcile_pass_duration_seconds_count") >= 1
    assert metric(server, "reconciler_changes_total", action="create") == 1

    extended = requests.post(f"{server.url}/api/sandboxes/web/extend", json={"seconds": 600}, headers=AUTH,
                             timeout=30)
    assert extended.status_code == 200, extended.text
    assert extended.json()["expires_at"] == pytest.approx(first["expires_at"] + 600, abs=0.01)

    recreated = requests.post(f"{server.url}/api/sandboxes/web/recreate", json={}, headers=AUTH, timeout=30)
    assert recreated.status_code == 200 and "watch loop" in recreated.json()["message"]
    again = wait_until(
        lambda: (r := row(server, "web")) and r["state"] == "ready" and r["container_id"] != first["container_id"]
        and r, timeout=20, message="web recreated by the loop")
    assert again["expires_at"] == pytest.approx(first["expires_at"] + 600, abs=0.01)

    deleted = requests.delete(f"{server.url}/api/sandboxes/web", json={}, headers=AUTH, timeout=30)
    assert deleted.status_code == 200 and "watch loop" in deleted.json()["message"]
    wait_until(lambda: row(server, "web") is None, timeout=20, message="web destroyed by the loop")
    wait_until(lambda: metric(server, "reconciler_changes_total", action="destroy") == 1, timeout=5)


def test_reconcile_serve_prints_its_token_serves_and_stops_cleanly(tmp_path, instance):
    import os
    import signal
    import subprocess
    import sys

    settings = settings_for(tmp_path, instance)
    too_short = run_cli(["serve", "--port", "0", *cli_args(settings)], env={"RECONCILER_ADMIN_TOKEN": "short"})
    assert too_short.returncode == 1 and "at least 16 characters" in too_short.stderr

    env = {k: v for k, v in os.environ.items() if k != "RECONCILER_ADMIN_TOKEN"}
    out = tmp_path / "serve.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.cli", "serve", "--port", "0", *cli_args(settings)],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        line = wait_until(lambda: next((x for x in out.read_text().splitlines() if x.startswith("Dashboard: ")), None),
                          timeout=20, message="the Dashboard line")
        url, _, token = line.removeprefix("Dashboard: ").partition("/#token=")
        assert len(token) >= 16 and f"Admin token (generated" in out.read_text()
        assert requests.get(f"{url}/api/overview", timeout=10).json()["instance"] == instance
        refused = requests.post(f"{url}/api/sandboxes/x/extend", json={"seconds": 60}, timeout=10)
        assert refused.status_code == 401
        accepted = requests.post(f"{url}/api/sandboxes/x/extend", json={"seconds": 60}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 404  # the token is good; there is no sandbox "x"
        assert (settings.traefik_dir / route_filename(settings)).exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (settings.traefik_dir / route_filename(settings)).exists()
