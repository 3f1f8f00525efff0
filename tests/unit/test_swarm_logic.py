"""Issue 8's pure parts: placement constraints as the spec validates them, the
config hash, the swarm engine's reading of services and tasks, its polled
events, upload limits and node addresses (no Docker daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.container_config import desired_sandbox, recreate_fields
from reconciler.engine import EngineError
from reconciler.loader import load_specs
from reconciler.observed import ObservedSandbox
from reconciler.swarm_engine import (
    MAX_CONFIG_BYTES,
    _TaskView,
    _to_sandbox,
    diff_events,
    node_hosts_from_env,
    upload_files,
)

BODY = "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n  port: 8000\n"


def load(tmp_path: Path, extra: str = "", name: str = "web"):  # noqa: ANN201 - Desired
    specs = tmp_path / "specs"
    specs.mkdir(parents=True, exist_ok=True)
    (specs / f"{name}.yaml").write_text(BODY.format(name=name) + extra)
    return load_specs(specs)


# --- placement in the spec ------------------------------------------------------------------


@pytest.mark.parametrize("constraint, stored", [
    ("node.labels.tier==gpu", "node.labels.tier==gpu"),
    ("node.hostname != web1", "node.hostname!=web1"),
    ("node.role==worker", "node.role==worker"),
    ("engine.labels.zone==eu-1", "engine.labels.zone==eu-1"),
    ("node.platform.arch==x86_64", "node.platform.arch==x86_64"),
])
def test_swarm_constraints_are_accepted_and_stored_without_spaces(tmp_path: Path, constraint: str, stored: str) -> None:
    desired = load(tmp_path, f"  placement:\n    constraints: ['{constraint}']\n")
    assert not desired.errors
    assert desired.specs["web"].spec.spec.placement.constraints == [stored]


@pytest.mark.parametrize("constraint, message", [
    ("node.rolee==worker", 'unknown constraint key "node.rolee": expected node.id, node.hostname, node.role'),
    ("tier=gpu", "expected a constraint like node.labels.tier==gpu or node.hostname!=web1 (== or !=)"),
    ("node.labels.==gpu", 'unknown constraint key "node.labels."'),
    ("node.hostname==", 'expected a value of letters, digits and :-_.*()?+[]^$|/ after ==, got ""'),
    ("node.hostname==a{b}", 'after ==, got "a{b}"'),
    ("node.role==boss", 'node.role is manager or worker, got "boss"'),
])
def test_a_bad_constraint_is_one_error_at_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   constraint: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    desired = load(tmp_path, f"  placement:\n    constraints:\n      - node.role==worker\n      - '{constraint}'\n")
    assert "web" not in desired.specs
    [error] = desired.errors
    assert str(error).startswith("specs/web.yaml:11:9: spec.placement.constraints[1]: ")
    assert message in str(error)


def test_placement_enters_the_config_hash_only_when_set(tmp_path: Path) -> None:
    plain = load(tmp_path / "a").specs["web"]
    placed = load(tmp_path / "b", "  placement:\n    constraints: [node.role==worker]\n").specs["web"]
    empty = load(tmp_path / "c", "  placement: {constraints: []}\n").specs["web"]
    assert "placement" not in recreate_fields(plain, "h")
    assert "placement" not in recreate_fields(empty, "h")
    assert recreate_fields(placed, "h")["placement"] == ["node.role==worker"]
    hashes = {desired_sandbox(x, "i", "sha256:1").config_hash for x in (plain, placed, empty)}
    assert len(hashes) == 2  # no placement and an empty one are the same container


# --- reading services and tasks ----------------------------------------------------------------


NODES = {
    "n1": {"ID": "n1", "Description": {"Hostname": "w1"}, "Status": {"State": "ready", "Addr": "198.18.0.3"}},
    "n2": {"ID": "n2", "Description": {"Hostname": "w2"}, "Status": {"State": "down", "Addr": "198.18.0.4"}},
    "m": {"ID": "m", "Description": {"Hostname": "m"}, "Status": {"State": "ready", "Addr": "0.0.0.0"},
          "ManagerStatus": {"Addr": "198.18.0.2:2377"}},
}


def service(replicas: int = 1) -> dict:
    labels = {"reconciler.managed": "true", "reconciler.instance": "i", "reconciler.sandbox": "web",
              "reconciler.port": "8000"}
    return {"ID": "svc1", "CreatedAt": "2026-12-01T08:22:45.437559732Z",
            "Spec": {"Name": "rc-i-web", "Labels": labels, "Mode": {"Replicated": {"Replicas": replicas}},
                     "TaskTemplate": {"ContainerSpec": {"Image": "sha256:abc"}}}}


def task(tid: str, node: str, state: str, desired: str = "running", created: str = "2026-12-01T08:00:00Z",
         port: int | None = 32768, exit_code: int = 0, err: str = "") -> dict:
    status = {"State": state, "ContainerStatus": {"ContainerID": "c" + tid, "ExitCode": exit_code}}
    if port:
        status["PortStatus"] = {"Ports": [{"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": port,
                                           "PublishMode": "host"}]}
    if err:
        status["Err"] = err
    return {"ID": tid, "ServiceID": "svc1", "NodeID": node, "DesiredState": desired, "CreatedAt": created,
            "Status": status}


def test_a_running_task_on_a_ready_node_is_routed_at_that_node_and_its_published_port() -> None:
    have = _to_sandbox(service(), [task("t1", "n1", "running")], NODES)
    assert (have.name, have.state, have.node, have.ip, have.route_port) == ("web", "running", "w1", "198.18.0.3", 32768)
    assert have.endpoint == "http://198.18.0.3:32768"
    assert have.route_target == ("198.18.0.3", 32768)
    assert have.created == pytest.approx(1796113365.437559)
    on_manager = _to_sandbox(service(), [task("t1", "m", "running")], NODES)
    assert on_manager.ip == "198.18.0.2"  # a manager reporting 0.0.0.0: its advertised address


def test_the_newest_running_task_wins_and_a_task_on_a_down_node_is_not_running() -> None:
    old = task("t1", "n2", "running", desired="shutdown", created="2026-12-01T08:00:00Z")
    new = task("t2", "n1", "running", created="2026-12-01T08:01:00Z", port=32770)
    assert _to_sandbox(service(), [old, new], NODES).route_port == 32770
    stranded = _to_sandbox(service(), [task("t1", "n2", "running")], NODES)
    assert (stranded.state, stranded.ip, stranded.endpoint) == ("restarting", None, None)
    assert stranded.status == "node w2 is down"


def test_a_task_waiting_for_a_node_says_why_and_a_service_scaled_to_zero_is_paused() -> None:
    waiting = task("t3", "", "pending", port=None, err="no suitable node (scheduling constraints not satisfied on 3 nodes)")
    have = _to_sandbox(service(), [waiting], NODES)
    assert have.state == "restarting"
    assert have.status == "pending: no suitable node (scheduling constraints not satisfied on 3 nodes)"
    stopped = _to_sandbox(service(replicas=0), [task("t1", "n1", "shutdown", desired="shutdown", exit_code=137)], NODES)
    assert (stopped.state, stopped.exit_code, stopped.endpoint) == ("paused", 137, None)  # never a crash


def test_the_plain_endpoint_is_unchanged_without_a_route_port() -> None:
    plain = ObservedSandbox("web", "c1", "rc-i-web", "running", {"reconciler.port": "8000"}, ip="10.213.0.2")
    assert plain.endpoint == "http://10.213.0.2:8000"
    assert plain.route_target == ("10.213.0.2", 8000)
    assert ObservedSandbox("web", "c1", "rc-i-web", "running", {}, ip="10.213.0.2", route_port=1).endpoint is None


# --- polled events ----------------------------------------------------------------------------------


def view(task_id: str | None, state: str = "running", target=("198.18.0.3", 32768), code: int | None = None) -> _TaskView:  # noqa: ANN001
    return _TaskView("web", state, task_id, target if task_id else None, code)


def actions(before: dict, after: dict) -> list[tuple[str, str, str | None, int | None]]:
    return [(e.action, e.container_id, e.sandbox, e.exit_code) for e in diff_events(before, after, 1.0)]


def test_events_between_two_looks() -> None:
    assert actions({}, {"s": view("t1")}) == [("create", "s", "web", None), ("start", "s", "web", None)]
    assert actions({"s": view("t1")}, {"s": view("t1")}) == []
    assert actions({"s": view("t1")}, {"s": view(None, "restarting", code=2)}) == [("die", "s", "web", 2)]
    moved = {"s": view("t2", target=("198.18.0.4", 32770))}
    assert actions({"s": view("t1")}, moved) == [
        ("die", "s", "web", None), ("create", "s", "web", None), ("start", "s", "web", None)]
    assert actions({"s": view("t1")}, {"s": view(None, "paused")}) == [("pause", "s", "web", None)]
    assert actions({"s": view("t1")}, {}) == [("destroy", "s", "web", None)]
    # A task still starting is no event yet: the one that runs is.
    assert actions({"s": view(None, "restarting")}, {"s": view(None, "restarting")}) == []


# --- configuration and uploads ----------------------------------------------------------------------


def test_node_engines_come_from_the_environment() -> None:
    env = {"RECONCILER_SWARM_NODES": "w1=tcp://10.0.0.5:2376, w2=unix:///run/w2.sock,"}
    assert node_hosts_from_env(env) == {"w1": "tcp://10.0.0.5:2376", "w2": "unix:///run/w2.sock"}
    assert node_hosts_from_env({}) == {}
    with pytest.raises(EngineError, match='expected "hostname=docker-url" items separated by ",", got "w1"'):
        node_hosts_from_env({"RECONCILER_SWARM_NODES": "w1"})


def test_each_uploaded_file_is_one_config_and_a_file_too_big_is_a_permanent_error(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    (specs / "site" / "sub").mkdir(parents=True)
    (specs / "site" / "index.html").write_text("hi\n")
    (specs / "site" / "sub" / "ok.bin").write_bytes(b"x" * MAX_CONFIG_BYTES)
    uploads = "  uploads:\n    - {source: site/, target: /www}\n    - {content: 'x', target: /etc/x, mode: '0600'}\n"
    (specs / "web.yaml").write_text(BODY.format(name="web") + uploads)
    want = desired_sandbox(load_specs(specs).specs["web"], "i", "sha256:1")
    files = {target: (len(data), mode) for target, data, mode in upload_files(want)}
    assert sorted(files) == ["/etc/x", "/www/index.html", "/www/sub/ok.bin"]  # directories are no configs
    assert files["/www/sub/ok.bin"][0] == MAX_CONFIG_BYTES
    assert files["/etc/x"] == (1, 0o600)

    (specs / "site" / "sub" / "ok.bin").write_bytes(b"x" * (MAX_CONFIG_BYTES + 1))
    want = desired_sandbox(load_specs(specs).specs["web"], "i", "sha256:2")
    with pytest.raises(EngineError) as caught:
        upload_files(want)
    assert caught.value.permanent
    assert str(caught.value) == (
        "web: upload /www/sub/ok.bin is 1000 KiB; on swarm every uploaded file is a swarm config, "
        "which holds 1 to 1023999 bytes: put big files in the image or a volume")


def test_a_sandbox_that_moved_is_probed_again_though_its_service_id_stayed() -> None:
    from reconciler.probe import ReadyCache

    def at(port: int) -> ObservedSandbox:
        return ObservedSandbox("web", "svc1", "rc-i-web", "running", {"reconciler.port": "8000"},
                               ip="127.0.0.1", route_port=port)

    cache = ReadyCache(answered=frozenset({("svc1", "http://127.0.0.1:9")}))
    assert cache.ready_set([at(9)]) == {"web"}  # answered before, at the same place: not probed
    assert cache.ready_set([at(1)]) == set()  # same id, new place: probed (nothing listens on port 1)
