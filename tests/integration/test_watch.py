"""``reconcile watch`` against the real engine and the real Traefik: file events,
Docker events, orphans, crash loops (issue 3, done-when point 1)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from watch_helpers import Watch, containers, host_of, running, spec_yaml, until

import reconciler.labels as L

pytestmark = [pytest.mark.docker, pytest.mark.traefik]


@pytest.fixture
def watch(instance: str, tmp_path: Path, traefik) -> Watch:  # noqa: ANN001
    w = Watch(instance, tmp_path, traefik_dir=traefik.dynamic_dir)
    yield w
    w.kill()


def body(traefik, host: str) -> str:  # noqa: ANN001
    return traefik.get(host).text.strip()


def test_add_modify_delete_under_watch(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    watch.start()
    watch.write("web.yaml", spec_yaml("web"))
    watch.wait_event("ready", "web")
    host = host_of(watch, "web")
    assert traefik.wait_status(host, 200).text.strip() == "web-1"

    # Modify: a new env value means a new container, then routed again.
    first = running(docker_client, watch.instance, "web")
    watch.write("web.yaml", spec_yaml("web", env={"V": "2"}))
    watch.wait_event("recreated", "web", contains="spec.env changed")
    until(lambda: body(traefik, host) == "web-2", 10, "the new version through Traefik")
    assert running(docker_client, watch.instance, "web")["Id"] != first["Id"]

    # Delete: container, network and route go.
    (watch.specs / "web.yaml").unlink()
    watch.wait_event("destroyed", "web", contains="no spec")
    until(lambda: not containers(docker_client, watch.instance, "web"), 10, "the container gone")
    traefik.wait_status(host, 404)
    nets = docker_client.api.networks(filters={"label": f"{L.INSTANCE}={watch.instance}"})
    assert nets == []


def test_an_atomic_rename_save_is_applied(watch: Watch, traefik) -> None:  # noqa: ANN001
    watch.start()
    watch.write("app.yaml", spec_yaml("app"))
    watch.wait_event("ready", "app")
    host = host_of(watch, "app")
    # What editors do: write a temp file beside it, then rename it over the spec.
    tmp = watch.specs / "app.yaml.swp"
    tmp.write_text(spec_yaml("app", env={"V": "saved"}))
    os.rename(tmp, watch.specs / "app.yaml")
    watch.wait_event("recreated", "app")
    until(lambda: body(traefik, host) == "app-saved", 10, "the saved version through Traefik")
    assert [e for e in watch.kinds() if e[0] == "error"] == []


def test_a_spec_written_in_two_chunks_is_never_applied_half(watch: Watch, docker_client) -> None:  # noqa: ANN001
    watch.start()
    full = spec_yaml("chunky", command="exec httpd -f -p 8000 -h /", env={"COLOR": "blue"})
    # Cut inside the command's quoted string: the first chunk is not a spec at all.
    cut = full.index("-p 8000")
    path = watch.specs / "chunky.yaml"
    with open(path, "w") as f:
        f.write(full[:cut])
        f.flush()
        time.sleep(0.3)
        f.write(full[cut:])
    watch.wait_event("ready", "chunky")
    time.sleep(1.5)  # a later pass would show any second apply
    assert len(watch.seen("created", "chunky")) == 1
    assert watch.seen("recreated", "chunky") == [] and watch.seen("destroyed", "chunky") == []
    [box] = containers(docker_client, watch.instance, "chunky")
    info = docker_client.api.inspect_container(box["Id"])
    assert info["Config"]["Cmd"][-1] == "exec httpd -f -p 8000 -h /"
    assert "COLOR=blue" in info["Config"]["Env"]

    # The same with an existing sandbox: the half-written file never takes it down.
    before = box["Id"]
    edited = full.replace("blue", "green")
    cut = edited.index("COLOR")
    with open(path, "w") as f:
        f.write(edited[:cut] + "COL")
        f.flush()
        time.sleep(0.3)
        f.write(edited[cut + 3:])
    watch.wait_event("recreated", "chunky")
    time.sleep(1.5)
    assert len(watch.seen("recreated", "chunky")) == 1 and watch.seen("destroyed", "chunky") == []
    [box] = containers(docker_client, watch.instance, "chunky")
    assert box["Id"] != before
    assert "COLOR=green" in docker_client.api.inspect_container(box["Id"])["Config"]["Env"]


def test_rm_f_of_a_sandbox_is_back_within_2s_with_the_same_url(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    watch.resync = "30s"  # only the Docker event can bring it back this fast
    watch.start()
    watch.write("web.yaml", spec_yaml("web"))
    watch.wait_event("ready", "web")
    host = host_of(watch, "web")
    traefik.wait_status(host, 200)
    old = running(docker_client, watch.instance, "web")
    docker_client.api.remove_container(old["Id"], force=True)
    # Issue 3: "a sandbox killed or removed from outside is back, routable, within 2 s".
    assert traefik.wait_status(host, 200, timeout=2.0).text.strip() == "web-1"
    new = running(docker_client, watch.instance, "web")
    assert new["Id"] != old["Id"]
    assert host_of(watch, "web") == host


def test_docker_stop_is_restarted_at_once(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    watch.resync = "30s"
    watch.start()
    watch.write("web.yaml", spec_yaml("web"))
    watch.wait_event("ready", "web")
    host = host_of(watch, "web")
    old = running(docker_client, watch.instance, "web")
    docker_client.api.stop(old["Id"], timeout=5)
    event = watch.wait_event("restarted", "web", timeout=10)
    assert event["message"] == "stopped from outside"
    traefik.wait_status(host, 200, timeout=5)
    assert running(docker_client, watch.instance, "web")["Id"] == old["Id"]  # the same container
    assert watch.seen("crashloop", "web") == []
    # docker kill is "from outside" too.
    docker_client.api.kill(old["Id"])
    watch.wait_event("restarted", "web", count=2, timeout=10)
    traefik.wait_status(host, 200, timeout=5)


def test_a_crash_loop_backs_off_and_says_why(watch: Watch, docker_client) -> None:  # noqa: ANN001
    watch.resync = "30s"
    watch.start()
    watch.write("crash.yaml", spec_yaml("crash", command="echo boom-$V; exit 3", port=None))
    third = watch.wait_event("crashloop", "crash", count=3, timeout=30)
    messages = [e["message"] for e in watch.seen("crashloop", "crash")]
    assert "restart #1" in messages[0] and "(backoff 1s)" in messages[0]
    assert "restart #2" in messages[1] and "(backoff 2s)" in messages[1]
    assert "restart #3" in third["message"] and "(backoff 4s)" in third["message"]
    assert all("exited with code 3" in m for m in messages)
    # Restarts wait out the backoff: never earlier than it says.
    restarts = [e["unix"] for e in watch.seen("restarted", "crash")]
    crashes = [e["unix"] for e in watch.seen("crashloop", "crash")]
    assert len(restarts) >= 2
    assert restarts[0] - crashes[0] >= 1.0 - 0.05 and restarts[1] - crashes[1] >= 2.0 - 0.05

    rows = watch.status()
    status = rows["crash"]["status"]
    assert rows["crash"]["state"] == "exited (CrashLoop)"
    assert status["summary"] == "CrashLoop"
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "CrashLoop"
    assert "exited with code 3" in stalled["message"] and "boom-1" in stalled["message"]
    assert stalled["lastTransitionTime"].endswith("Z")

    # Fixing the spec starts a new version: running, and the crash loop is over.
    watch.write("crash.yaml", spec_yaml("crash", command="exec sleep 1000", port=None))
    watch.wait_event("ready", "crash", timeout=15)
    until(lambda: watch.status()["crash"]["status"]["summary"] == "Ready", 10, "Ready after the fix")


def test_orphans_are_removed_and_nothing_unowned_is_touched(watch: Watch, docker_client) -> None:  # noqa: ANN001
    api = docker_client.api
    owned = {L.MANAGED: "true", L.INSTANCE: watch.instance, L.SANDBOX: "ghost", L.KIND: "sandbox"}
    net = api.create_network(f"rc-{watch.instance}-ghost", labels=owned)["Id"]
    vol = api.create_volume(f"rc-{watch.instance}-ghost-data", labels=owned)["Name"]
    orphan = api.create_container("reconciler-test/busybox:latest", ["sleep", "1000"], labels=owned,
                                  name=f"{watch.instance}-orphan")["Id"]
    api.start(orphan)
    # Not ours: no labels; the managed label of another instance; half the ownership labels.
    bystanders = []
    for suffix, labels in [("plain", {}), ("other", {L.MANAGED: "true", L.INSTANCE: "someone-else"}),
                           ("half", {L.INSTANCE: watch.instance})]:
        cid = api.create_container("reconciler-test/busybox:latest", ["sleep", "1000"], labels=labels,
                                   name=f"{watch.instance}-{suffix}")["Id"]
        api.start(cid)
        bystanders.append(cid)
    watch.start()
    watch.write("web.yaml", spec_yaml("web"))
    watch.wait_event("ready", "web")
    until(lambda: not [c for c in api.containers(all=True) if c["Id"] == orphan], 10, "the orphan container gone")
    until(lambda: not api.networks(filters={"id": net}), 10, "the orphan network gone")
    until(lambda: not (api.volumes(filters={"name": vol}).get("Volumes") or []), 10, "the orphan volume gone")
    # A hand-made orphan appearing while the watch runs goes too (a create event).
    late = api.create_container("reconciler-test/busybox:latest", ["sleep", "1000"], labels=owned,
                                name=f"{watch.instance}-late")["Id"]
    until(lambda: not [c for c in api.containers(all=True) if c["Id"] == late], 10, "the late orphan gone")
    for cid in bystanders:
        assert api.inspect_container(cid)["State"]["Running"], "an unowned container was touched"
    assert running(docker_client, watch.instance, "web") is not None


def test_an_invalid_spec_never_destroys_its_sandbox(watch: Watch, docker_client) -> None:  # noqa: ANN001
    watch.start()
    watch.write("web.yaml", spec_yaml("web"))
    watch.wait_event("ready", "web")
    box = running(docker_client, watch.instance, "web")
    watch.write("web.yaml", spec_yaml("web").replace("image:", "imagee:"))
    stalled = watch.wait_event("stalled", "web")
    assert "InvalidSpec" in stalled["message"]
    time.sleep(1.5)
    assert running(docker_client, watch.instance, "web")["Id"] == box["Id"]
    assert watch.seen("destroyed", "web") == [] and watch.seen("recreated", "web") == []


def test_watch_prints_text_lines_and_events_are_logged(instance: str, tmp_path: Path, docker_client) -> None:  # noqa: ANN001
    w = Watch(instance, tmp_path)
    w.write("web.yaml", spec_yaml("web", port=None, command="exec sleep 1000"))
    w.start()
    try:
        w.wait_event("created", "web")
        w.wait_event("ready", "web")
    finally:
        assert w.stop() == 0
    out = w.cli("events", "--since", "1h")
    assert out.returncode == 0, out.stderr
    kinds = [line.split()[1] for line in out.stdout.splitlines()]
    assert kinds[:3] == ["watching", "created", "ready"] and kinds[-1] == "stopped"
    as_json = json.loads(w.cli("events", "--output", "json", "--name", "web").stdout)
    assert [e["kind"] for e in as_json] == ["created", "ready"]
    assert as_json[0]["message"] == "new sandbox"
