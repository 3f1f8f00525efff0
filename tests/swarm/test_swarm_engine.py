"""Issue 8 on a real 3-node swarm (tests/swarm_fixture.py): the core acceptance
flow with ``--engine swarm``, orphans and foreign objects, placement, rerouting
after a node's engine stops, agent operations, and the fixture's own cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

import helpers
import reconciler.labels as L
from core_helpers import BUSYBOX, HTTPD, Reconcile, httpd_spec
from swarm_fixture import IMAGE, LocalSwarm, build_swarm, run_failover

pytestmark = [pytest.mark.swarm, pytest.mark.docker]


# --- looking at the swarm ------------------------------------------------------------------------


def services(swarm: LocalSwarm, instance: str) -> dict[str, dict[str, Any]]:
    """This instance's services by sandbox name."""
    with swarm.manager.connected() as client:
        found = client.api.services(filters={"label": L.selector(instance)})
    return {s["Spec"]["Labels"][L.SANDBOX]: s for s in found}


def swarm_names(swarm: LocalSwarm, instance: str, kind: str) -> set[str]:
    """Names of this instance's ``networks`` or ``configs`` on the manager."""
    with swarm.manager.connected() as client:
        if kind == "networks":
            return {n["Name"] for n in client.api.networks(filters={"label": L.selector(instance)})}
        return {c["Spec"]["Name"] for c in client.api.configs(filters={"label": L.selector(instance)})}


def placement(swarm: LocalSwarm, service: str) -> tuple[str, str, int] | None:
    """(node hostname, node address, published port) of the service's running task."""
    with swarm.manager.connected() as client:
        nodes = {n["ID"]: n for n in client.api.nodes()}
        for task in client.api.tasks(filters={"service": service, "desired-state": "running"}):
            if task["Status"]["State"] == "running":
                node = nodes[task["NodeID"]]
                port = task["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
                return node["Description"]["Hostname"], node["Status"]["Addr"], port
    return None


def page(swarm: LocalSwarm, service: str) -> str:
    """GET / of the service where its task runs, from this host (no Traefik)."""
    def fetch() -> str | None:
        where = placement(swarm, service)
        if where is None:
            return None
        resp = requests.get(f"http://{where[1]}:{where[2]}/", timeout=2)
        return resp.text if resp.status_code == 200 else None

    return helpers.wait_until(fetch, timeout=20, message=f"{service} to answer on its node")


def routes(rc: Reconcile) -> dict[str, str]:
    """Router name -> server URL, from the rendered Traefik file."""
    from ruamel.yaml import YAML

    data = YAML(typ="safe").load(rc.dynamic_file.read_text()) or {}
    svcs = (data.get("http") or {}).get("services") or {}
    return {name: s["loadBalancer"]["servers"][0]["url"] for name, s in svcs.items()}


# --- acceptance 1: the fixture ----------------------------------------------------------------------


def test_the_fixture_swarm_has_three_ready_nodes_apart_from_the_main_engine(swarm: LocalSwarm, docker_client) -> None:
    with swarm.manager.connected() as client:
        nodes = client.api.nodes()
        info = client.api.info()
    assert sorted((n["Spec"]["Role"], n["Status"]["State"]) for n in nodes) == [
        ("manager", "ready"), ("worker", "ready"), ("worker", "ready")]
    assert len({n["Description"]["Hostname"] for n in nodes}) == 3
    assert {n["Status"]["Addr"] for n in nodes} == {n.address for n in swarm.nodes.values()}
    assert info["Swarm"]["Cluster"]["Spec"]["Dispatcher"]["HeartbeatPeriod"] == 1_000_000_000
    # The main engine is in no swarm and sees none of the nodes' objects.
    assert docker_client.info()["Swarm"]["LocalNodeState"] == "inactive"
    for node in swarm.nodes.values():
        with node.connected() as client:
            assert client.images.get(IMAGE).id == docker_client.images.get(IMAGE).id


def test_a_swarm_is_torn_down_without_a_trace(docker_client) -> None:
    small = build_swarm(workers=1, main=docker_client)
    made = [small.root, *(Path("/run/netns") / n.netns for n in small.nodes.values())]
    pids = [n.proc.pid for n in small.nodes.values() if n.proc]
    assert all(p.exists() for p in made)
    problems = small.teardown()
    assert problems == []
    assert small.leftovers() == []
    assert not any(p.exists() for p in made)
    assert all(not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
               for pid in pids)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert small.host_link not in links
    assert str(small.root) not in Path("/proc/self/mountinfo").read_text()


# --- acceptance 2: the core flow on swarm ------------------------------------------------------------


def test_apply_is_idempotent_edits_replace_and_a_deleted_spec_destroys_only_its_sandbox(
    src: Reconcile, swarm: LocalSwarm
) -> None:
    (src.specs / "site").mkdir()
    (src.specs / "site" / "index.html").write_text("version one\n")
    src.write("alpha.yaml", httpd_spec("alpha", source="site/"))
    src.write("bravo.yaml", httpd_spec("bravo"))
    src.write("charlie.yaml", httpd_spec("charlie"))
    plan = src.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == [
        "  + alpha (new sandbox)", "  + bravo (new sandbox)", "  + charlie (new sandbox)",
        "Plan: 3 to add, 0 to change, 0 to destroy.",
    ]
    src.expect(0, "apply")
    first = services(swarm, src.instance)
    assert sorted(first) == ["alpha", "bravo", "charlie"]
    for name, svc in first.items():
        labels = svc["Spec"]["Labels"]
        assert labels[L.MANAGED] == "true" and labels[L.INSTANCE] == src.instance
        assert svc["Spec"]["Name"] == f"rc-{src.instance}-{name}"
        assert svc["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    assert page(swarm, first["alpha"]["ID"]) == "version one\n"
    assert page(swarm, first["bravo"]["ID"]) == "hello from bravo\n"
    assert swarm_names(swarm, src.instance, "networks") == {f"rc-{src.instance}-{n}" for n in first}
    assert len(swarm_names(swarm, src.instance, "configs")) == 3  # one per uploaded file
    # Each route points at the node running the task, on its host-mode port.
    for name in first:
        node, addr, port = placement(swarm, first[name]["ID"])
        assert routes(src)[f"rc-{src.instance}-{name}"] == f"http://{addr}:{port}"

    assert "No changes." in src.expect(0, "apply")
    assert src.expect(0, "plan", "--detailed-exitcode").splitlines() == [
        "No changes. Sandboxes match the specs.", "Plan: 0 to add, 0 to change, 0 to destroy."]
    rows = {r["name"]: r for r in json.loads(src.expect(0, "status", "--output", "json"))}
    assert {n: r["node"] for n, r in rows.items()} == {n: placement(swarm, s["ID"])[0] for n, s in first.items()}
    assert "NODE" in src.expect(0, "status").splitlines()[0]

    src.write("bravo.yaml", httpd_spec("bravo", command=[*HTTPD[:2], "-v", *HTTPD[2:]]))
    (src.specs / "site" / "index.html").write_text("version two\n")
    plan = src.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == [
        "-/+ alpha (spec.uploads changed)", "-/+ bravo (spec.command changed)",
        "Plan: 2 to add, 0 to change, 2 to destroy.",
    ]
    src.expect(0, "apply")
    second = services(swarm, src.instance)
    assert second["alpha"]["ID"] != first["alpha"]["ID"] and second["bravo"]["ID"] != first["bravo"]["ID"]
    assert second["charlie"]["ID"] == first["charlie"]["ID"]
    assert second["bravo"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"][:3] == ["httpd", "-f", "-v"]
    assert page(swarm, second["alpha"]["ID"]) == "version two\n"
    assert len(swarm_names(swarm, src.instance, "configs")) == 3  # the old version's config went
    src.expect(0, "plan", "--detailed-exitcode")

    src.remove("charlie.yaml")
    assert src.expect(2, "plan", "--detailed-exitcode").splitlines() == [
        "  - charlie (no spec)", "Plan: 0 to add, 0 to change, 1 to destroy."]
    src.expect(0, "apply")
    third = services(swarm, src.instance)
    assert {n: s["ID"] for n, s in third.items()} == {n: second[n]["ID"] for n in ("alpha", "bravo")}
    assert swarm_names(swarm, src.instance, "networks") == {f"rc-{src.instance}-alpha", f"rc-{src.instance}-bravo"}
    assert len(swarm_names(swarm, src.instance, "configs")) == 2
    assert sorted(routes(src)) == [f"rc-{src.instance}-alpha", f"rc-{src.instance}-bravo"]
    src.expect(0, "plan", "--detailed-exitcode")

    assert src.expect(0, "destroy", "--all").splitlines() == ["  - alpha: destroyed", "  - bravo: destroyed"]
    assert services(swarm, src.instance) == {}
    assert swarm_names(swarm, src.instance, "networks") == set()
    assert swarm_names(swarm, src.instance, "configs") == set()


def test_orphans_go_and_foreign_services_and_containers_stay(src: Reconcile, swarm: LocalSwarm, tmp_path: Path) -> None:
    owner = {**L.owner_labels(src.instance), L.KIND: "sandbox"}
    with swarm.manager.connected() as client:
        api = client.api
        image = api.inspect_image(BUSYBOX)["Id"]
        sleeper = {"ContainerSpec": {"Image": image, "Args": ["sleep", "600"], "Init": True}}
        # Ours by label, with no spec: an orphan service, network and config.
        api.create_service(sleeper, name=f"rc-{src.instance}-ghost", labels={**owner, L.SANDBOX: "ghost"},
                           endpoint_spec={"Mode": "dnsrr"})
        api.create_network(f"rc-{src.instance}-lost", driver="overlay", labels={**owner, L.SANDBOX: "lost"})
        api.create_config(f"rc-{src.instance}-stale", b"old\n", labels={**owner, L.SANDBOX: "ghost"})
        # Not ours: a lookalike name, a half label, and a plain container on the manager.
        foreign = [
            api.create_service(sleeper, name=f"rc-{src.instance}-lookalike", endpoint_spec={"Mode": "dnsrr"})["ID"],
            api.create_service(sleeper, name=f"{src.instance}-half", endpoint_spec={"Mode": "dnsrr"},
                               labels={L.MANAGED: "false", L.INSTANCE: src.instance, L.SANDBOX: "half"})["ID"],
        ]
        plain = api.create_container(image, ["sleep", "600"], name=f"{src.instance}-plain",
                                     labels={**L.owner_labels(src.instance), L.SANDBOX: "plain"},
                                     host_config=api.create_host_config(init=True))["Id"]
        api.start(plain)
    (tmp_path / "other").mkdir()
    other = Reconcile(tmp_path / "other", src.instance + "o")
    other.env.update(swarm.env())
    other.write("web.yaml", httpd_spec("web"))
    try:
        other.expect(0, "apply")
        other_id = services(swarm, other.instance)["web"]["ID"]

        src.write("web.yaml", httpd_spec("web"))
        src.write("lookalike.yaml", httpd_spec("lookalike"))
        plan = src.expect(2, "plan", "--detailed-exitcode")
        assert plan.splitlines() == [
            "  - ghost (no spec)", "  + lookalike (new sandbox)", "  + web (new sandbox)",
            f"  - network rc-{src.instance}-lost (orphan)", "Plan: 2 to add, 0 to change, 2 to destroy.",
        ]
        out = src.expect(1, "apply")
        assert (f'a service named "rc-{src.instance}-lookalike" exists and is not owned by instance '
                f'"{src.instance}"') in out
        assert sorted(services(swarm, src.instance)) == ["web"]
        assert swarm_names(swarm, src.instance, "networks") == {f"rc-{src.instance}-web", f"rc-{src.instance}-lookalike"}
        assert f"rc-{src.instance}-stale" not in swarm_names(swarm, src.instance, "configs")
        src.remove("lookalike.yaml")
        src.expect(0, "apply")
        assert src.expect(0, "destroy", "--all").splitlines() == ["  - web: destroyed"]
        with swarm.manager.connected() as client:
            api = client.api
            assert all(api.inspect_service(sid)["ID"] == sid for sid in [*foreign, other_id])
            assert api.inspect_container(plain)["State"]["Status"] == "running"
        assert other.expect(0, "plan", "--detailed-exitcode").startswith("No changes.")
    finally:
        other.expect(0, "destroy", "--all")
        with swarm.manager.connected() as client:
            for sid in foreign:
                client.api.remove_service(sid)
            client.api.remove_container(plain, force=True)


def test_swarm_limits_are_clear_errors_for_that_sandbox_only(src: Reconcile, swarm: LocalSwarm) -> None:
    (src.specs / "big").mkdir()
    (src.specs / "big" / "blob.bin").write_bytes(b"\0" * (1000 * 1024))
    src.write("big.yaml", httpd_spec("big", source="big/"))
    src.write("closed.yaml", httpd_spec("closed", extra="  egress: false\n"))
    src.write("fine.yaml", httpd_spec("fine"))
    out = src.expect(1, "apply")
    assert ("big: FAILED: big: upload /www/blob.bin is 1000 KiB; on swarm every uploaded file is a swarm "
            "config, which holds 1 to 1023999 bytes") in out
    assert "closed: FAILED: closed: egress: false with a port cannot be routed on swarm" in out
    assert sorted(services(swarm, src.instance)) == ["fine"]


# --- acceptance 3: placement, and rerouting after a node's engine stops ------------------------------


def test_a_placement_constraint_puts_the_sandbox_on_the_named_node(src: Reconcile, swarm: LocalSwarm) -> None:
    w1, w2 = (n.hostname for n in swarm.workers)
    pinned = f"  placement:\n    constraints: [node.hostname=={w2}]\n"
    src.write("pinned.yaml", httpd_spec("pinned", extra=pinned))
    src.expect(0, "apply")
    svc = services(swarm, src.instance)["pinned"]
    node, addr, port = placement(swarm, svc["ID"])
    assert node == w2 and addr == swarm.by_hostname(w2).address
    assert routes(src)[f"rc-{src.instance}-pinned"] == f"http://{addr}:{port}"
    assert svc["Spec"]["TaskTemplate"]["Placement"]["Constraints"] == [f"node.hostname=={w2}"]

    src.write("pinned.yaml", httpd_spec("pinned", extra=pinned.replace(w2, w1)))
    assert src.expect(2, "plan", "--detailed-exitcode").splitlines()[0] == "-/+ pinned (spec.placement changed)"
    src.expect(0, "apply")
    node, addr, port = placement(swarm, services(swarm, src.instance)["pinned"]["ID"])
    assert node == w1
    assert routes(src)[f"rc-{src.instance}-pinned"] == f"http://{addr}:{port}"

    # A constraint no node meets: the sandbox waits, and status says why.
    src.write("pinned.yaml", httpd_spec("pinned", extra=pinned.replace(w2, "nowhere")))
    src.expect(0, "apply", "--no-wait")
    rows = {r["name"]: r for r in json.loads(src.expect(0, "status", "--output", "json"))}
    assert rows["pinned"]["state"].startswith("restarting (pending: no suitable node (scheduling constraints")
    assert f"rc-{src.instance}-pinned" not in routes(src)


def test_stopping_the_engine_under_a_sandbox_moves_it_and_traefik_follows(
    swarm: LocalSwarm, swarm_instance: str, tmp_path: Path, traefik: helpers.TraefikHandle
) -> None:
    moved = run_failover(swarm, tmp_path, swarm_instance, traefik.dynamic_dir,
                         lambda host: traefik.get(host).status_code)
    print(f"failover figures: {moved.to_json()}")
    assert moved.before != moved.after
    assert {moved.before, moved.after} <= {n.hostname for n in swarm.workers}  # node.role==worker held
    assert moved.after_url.startswith(f"http://{swarm.by_hostname(moved.after).address}:")
    assert moved.node_down_s <= moved.task_running_s <= moved.routed_s
    assert all(node.running for node in swarm.nodes.values())  # the stopped one is back


# --- exec, logs, upload, download ---------------------------------------------------------------------


def test_exec_logs_upload_and_download_reach_the_node_running_the_task(src: Reconcile, swarm: LocalSwarm, tmp_path: Path) -> None:
    w1 = swarm.workers[0].hostname
    command = ["sh", "-c", "echo started-$HOSTNAME; exec httpd -f -p 8000 -h /www"]
    src.write("box.yaml", httpd_spec("box", command=command,
                                     extra=f"  placement:\n    constraints: [node.hostname=={w1}]\n"))
    src.expect(0, "apply")
    result = src("exec", "box", "--", "sh", "-c", "cat /www/index.html; echo oops >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, "hello from box\n", "oops\n")
    hostname = json.loads(src.expect(0, "url", "box", "--output", "json"))["hostname"].split(".")[0]
    assert helpers.wait_until(lambda: f"started-{hostname}" in src.expect(0, "logs", "box"), timeout=10)

    node, addr, port = placement(swarm, services(swarm, src.instance)["box"]["ID"])
    assert src.expect(0, "url", "box", "--port", "8000").strip() == f"http://{addr}:{port}"
    assert "only its spec port 8000 is reachable from here" in src("url", "box", "--port", "9000").stderr

    local = tmp_path / "note.txt"
    local.write_text("from the host\n")
    src.expect(0, "upload", "box", str(local), "/tmp/note.txt")
    assert src.expect(0, "exec", "box", "--", "cat", "/tmp/note.txt") == "from the host\n"
    src.expect(0, "exec", "box", "--", "sh", "-c", "echo made inside > /tmp/out.txt")
    src.expect(0, "download", "box", "/tmp/out.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").read_text() == "made inside\n"

    # Without a way to reach that node's engine: a clear error, and logs still work.
    src.env["RECONCILER_SWARM_NODES"] = f"{swarm.manager.hostname}={swarm.manager.base_url}"
    result = src("exec", "box", "--", "true")
    assert result.returncode == 1
    assert f'the task runs on node "{w1}", whose engine is not reachable from here' in result.stderr
    assert f"started-{hostname}" in src.expect(0, "logs", "box")


# --- the watch loop: drift repair, TTL and events on swarm ----------------------------------------------


def test_the_watch_loop_repairs_drift_and_ends_lifetimes_on_swarm(src: Reconcile, swarm: LocalSwarm, tmp_path: Path) -> None:
    src.write("keeper.yaml", httpd_spec("keeper"))
    src.write("brief.yaml", httpd_spec("brief", extra="  ttl: 6s\n"))
    log = open(tmp_path / "watch.log", "w")
    watch = subprocess.Popen(helpers_cli("watch", "--resync", "30s"), env={**os.environ, **src.env},
                             cwd=src.cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        first = helpers.wait_until(lambda: services(swarm, src.instance).get("keeper"), timeout=20)
        with swarm.manager.connected() as client:
            client.api.remove_service(first["ID"])  # behind the reconciler's back
        second = helpers.wait_until(
            lambda: (s := services(swarm, src.instance).get("keeper")) and s["ID"] != first["ID"] and s, timeout=20)
        assert page(swarm, second["ID"]) == "hello from keeper\n"
        with swarm.manager.connected() as client:  # `docker service scale keeper=0`
            info = client.api.inspect_service(second["ID"])
            client.api.update_service(second["ID"], info["Version"]["Index"], mode={"Replicated": {"Replicas": 0}},
                                      fetch_current_spec=True)
        helpers.wait_until(lambda: replicas(swarm, second["ID"]) == 1, timeout=20, message="the scale back to 1")
        assert page(swarm, second["ID"]) == "hello from keeper\n"  # started again, same service
        helpers.wait_until(lambda: "brief" not in services(swarm, src.instance), timeout=30, message="the ttl")

        def logged() -> list[tuple[str, str]] | None:
            kinds = [(e["kind"], e["name"]) for e in json.loads(src.expect(0, "events", "--output", "json"))]
            return kinds if {("restarted", "keeper"), ("expired", "brief")} <= set(kinds) else None

        # A pass logs its events after it waited for what it started: wait for them, then stop.
        kinds = helpers.wait_until(logged, timeout=20, message="the restart and the expiry in the events log")
    finally:
        watch.terminate()
        watch.wait(timeout=20)
        log.close()
    assert kinds.count(("created", "keeper")) == 2
    assert ("crashloop", "keeper") not in kinds  # a scale to zero is no crash


def helpers_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler.cli", *args]


def replicas(swarm: LocalSwarm, service: str) -> int:
    with swarm.manager.connected() as client:
        return client.api.inspect_service(service)["Spec"]["Mode"]["Replicated"]["Replicas"]
