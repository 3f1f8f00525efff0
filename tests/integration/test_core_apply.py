"""Issue 2 against the real engine: apply converges and is idempotent, edits recreate,
deleted specs destroy exactly their sandbox, foreign containers are never touched, bad
specs never stop good ones, and every sandbox is hardened."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
from ruamel.yaml import YAML

import reconciler.labels as L
from core_helpers import BUSYBOX, HTTPD, Reconcile, httpd_spec, ip_of, networks, owned, page
from reconciler.spec import BASE_CAPABILITIES

pytestmark = pytest.mark.docker


@pytest.fixture
def rc(tmp_path: Path, instance: str) -> Reconcile:
    return Reconcile(tmp_path, instance)


@pytest.fixture
def foreign(docker_client) -> Iterator[list[str]]:  # noqa: ANN001
    """Ids of containers this test makes outside the reconciler; removed afterwards."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        try:
            docker_client.api.remove_container(cid, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


@pytest.fixture
def other_instance(docker_client, instance: str) -> Iterator[str]:  # noqa: ANN001
    """A second instance on the same engine; everything it owns is removed afterwards."""
    name = instance + "o"
    yield name
    api = docker_client.api
    label = f"{L.INSTANCE}={name}"
    for c in api.containers(all=True, filters={"label": label}):
        api.remove_container(c["Id"], force=True)
    for n in api.networks(filters={"label": label}):
        api.remove_network(n["Id"])


def routes_in(rc: Reconcile) -> dict[str, dict]:
    data = YAML(typ="safe").load(rc.dynamic_file.read_text()) or {}
    return (data.get("http") or {}).get("routers") or {}


# --- acceptance 2 ----------------------------------------------------------------------------


def test_three_specs_converge_idempotently_and_a_deleted_spec_destroys_only_its_sandbox(rc: Reconcile, docker_client) -> None:
    for name in ("alpha", "bravo", "charlie"):
        rc.write(f"{name}.yaml", httpd_spec(name))
    plan = rc.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == [
        "  + alpha (new sandbox)",
        "  + bravo (new sandbox)",
        "  + charlie (new sandbox)",
        "Plan: 3 to add, 0 to change, 0 to destroy.",
    ]
    rc.expect(0, "apply")

    running = owned(docker_client, rc.instance)
    assert sorted(running) == ["alpha", "bravo", "charlie"]
    for name, raw in running.items():
        assert raw["State"] == "running"
        assert raw["Labels"][L.MANAGED] == "true" and raw["Labels"][L.INSTANCE] == rc.instance
        assert raw["Names"] == [f"/rc-{rc.instance}-{name}"]
        assert page(ip_of(raw, rc.instance)) == f"hello from {name}\n"
    assert networks(docker_client, rc.instance) == {f"rc-{rc.instance}-{n}" for n in running}
    assert sorted(routes_in(rc)) == [f"rc-{rc.instance}-{n}" for n in ("alpha", "bravo", "charlie")]

    again = rc.expect(0, "apply")
    assert "No changes." in again
    plan = rc.expect(0, "plan", "--detailed-exitcode")
    assert plan.splitlines() == ["No changes. Sandboxes match the specs.", "Plan: 0 to add, 0 to change, 0 to destroy."]
    ids = {n: raw["Id"] for n, raw in owned(docker_client, rc.instance).items()}
    assert ids == {n: raw["Id"] for n, raw in running.items()}

    rc.remove("charlie.yaml")
    plan = rc.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == ["  - charlie (no spec)", "Plan: 0 to add, 0 to change, 1 to destroy."]
    rc.expect(0, "apply")
    after = owned(docker_client, rc.instance)
    assert {n: raw["Id"] for n, raw in after.items()} == {"alpha": ids["alpha"], "bravo": ids["bravo"]}
    assert networks(docker_client, rc.instance) == {f"rc-{rc.instance}-alpha", f"rc-{rc.instance}-bravo"}
    assert sorted(routes_in(rc)) == [f"rc-{rc.instance}-alpha", f"rc-{rc.instance}-bravo"]
    rc.expect(0, "plan", "--detailed-exitcode")


def test_editing_the_command_or_an_uploaded_file_recreates(rc: Reconcile, docker_client) -> None:
    (rc.specs / "site").mkdir()
    (rc.specs / "site" / "index.html").write_text("version one\n")
    rc.write("web.yaml", httpd_spec("web", source="site/"))
    rc.write("other.yaml", httpd_spec("other"))
    rc.expect(0, "apply")
    first = owned(docker_client, rc.instance)
    assert page(ip_of(first["web"], rc.instance)) == "version one\n"

    rc.write("web.yaml", httpd_spec("web", source="site/", command=[*HTTPD[:2], "-v", *HTTPD[2:]]))
    plan = rc.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == ["-/+ web (spec.command changed)", "Plan: 1 to add, 0 to change, 1 to destroy."]
    out = rc.expect(0, "apply")
    assert "-/+ web (spec.command changed): done" in out
    second = owned(docker_client, rc.instance)
    assert second["web"]["Id"] != first["web"]["Id"]
    assert second["other"]["Id"] == first["other"]["Id"]
    assert second["web"]["Command"].startswith("httpd -f -v")
    rc.expect(0, "plan", "--detailed-exitcode")

    (rc.specs / "site" / "index.html").write_text("version two\n")  # same size, new bytes
    plan = rc.expect(2, "plan", "--detailed-exitcode")
    assert plan.splitlines() == ["-/+ web (spec.uploads changed)", "Plan: 1 to add, 0 to change, 1 to destroy."]
    rc.expect(0, "apply")
    third = owned(docker_client, rc.instance)
    assert third["web"]["Id"] != second["web"]["Id"]
    assert page(ip_of(third["web"], rc.instance)) == "version two\n"
    assert third["other"]["Id"] == first["other"]["Id"]
    rc.expect(0, "plan", "--detailed-exitcode")


def test_plan_output_json(rc: Reconcile) -> None:
    rc.write("web.yaml", httpd_spec("web"))
    rc.write("bad.yaml", httpd_spec("bad", extra="  ttl: forever\n"))
    result = rc("plan", "--output", "json")
    assert result.returncode == 1, result.stderr  # an invalid spec is an error
    data = json.loads(result.stdout)
    assert [(c["action"], c["name"], c["cause"]) for c in data["changes"]] == [("create", "web", "new sandbox")]
    assert data["summary"] == {"add": 1, "change": 0, "destroy": 0}
    [error] = data["errors"]
    assert error["path"].endswith("specs/bad.yaml") and error["field"] == "spec.ttl"
    assert (error["line"], error["col"]) == (13, 3)


# --- acceptance 3 ------------------------------------------------------------------------------


def test_foreign_and_other_instance_containers_survive_apply_and_destroy(
    rc: Reconcile, docker_client, foreign: list[str], other_instance: str, tmp_path: Path
) -> None:
    api = docker_client.api
    lookalike = api.create_container(BUSYBOX, ["sleep", "600"], name=f"rc-{rc.instance}-lookalike",
                                     host_config=api.create_host_config(init=True))["Id"]
    foreign.append(lookalike)
    api.start(lookalike)
    # Labelled like ours, but the ownership label is not "true": still not ours.
    half = api.create_container(BUSYBOX, ["sleep", "600"], name=f"rc-{rc.instance}-half",
                                labels={L.MANAGED: "false", L.INSTANCE: rc.instance, L.SANDBOX: "half"},
                                host_config=api.create_host_config(init=True))["Id"]
    foreign.append(half)
    api.start(half)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = Reconcile(other_dir, other_instance)
    other.write("web.yaml", httpd_spec("web"))
    other.expect(0, "apply")
    other_id = owned(docker_client, other_instance)["web"]["Id"]

    def survivors() -> dict[str, str]:
        return {cid: api.inspect_container(cid)["State"]["Status"] for cid in (lookalike, half, other_id)}

    rc.write("web.yaml", httpd_spec("web"))
    rc.write("half.yaml", httpd_spec("half"))
    rc.write("lookalike.yaml", httpd_spec("lookalike"))
    out = rc.expect(1, "apply")  # two names are taken by containers we do not own
    assert f'a container named "rc-{rc.instance}-lookalike" exists and is not owned by instance "{rc.instance}"' in out
    assert f'a container named "rc-{rc.instance}-half" exists and is not owned' in out
    assert sorted(owned(docker_client, rc.instance)) == ["web"]
    assert survivors() == {lookalike: "running", half: "running", other_id: "running"}

    rc.remove("half.yaml")
    rc.remove("lookalike.yaml")
    rc.expect(0, "apply")
    rc.remove("web.yaml")
    rc.expect(0, "apply")
    assert owned(docker_client, rc.instance) == {}
    rc.write("web.yaml", httpd_spec("web"))
    rc.expect(0, "apply")
    out = rc.expect(0, "destroy", "--all")
    assert out.splitlines() == ["  - web: destroyed"]
    assert owned(docker_client, rc.instance) == {}
    assert networks(docker_client, rc.instance) == set()
    assert survivors() == {lookalike: "running", half: "running", other_id: "running"}
    assert other.expect(0, "plan", "--detailed-exitcode").startswith("No changes.")
    # The other instance never saw ours: its plan and status show only its own sandbox.
    rows = json.loads(other.expect(0, "status", "--output", "json"))
    assert [r["name"] for r in rows] == ["web"]


# --- acceptance 4 --------------------------------------------------------------------------------


BAD_SPECS = {
    "unknown.yaml": (httpd_spec("unknown", extra="  prot: 80\n"), 'spec.prot: unknown field (did you mean "port"?)'),
    "type.yaml": (httpd_spec("type", extra="  egress: maybe\n"), 'spec.egress: expected true or false, got "maybe"'),
    "name.yaml": (httpd_spec("Bad_Name"), "metadata.name: expected a name of a-z"),
    "ttl.yaml": (httpd_spec("ttl", extra="  ttl: forever\n"), 'spec.ttl: expected a duration like 90s, 15m, 24h or 7d, got "forever"'),
    "size.yaml": (httpd_spec("size").replace("memory: 64m", "memory: lots"), 'spec.resources.memory: expected a size like 512m or 2g, got "lots"'),
    "abs.yaml": (httpd_spec("abs", source="/etc"), 'spec.uploads[0].source: expected a path relative to the spec file, got "/etc"'),
    "escape.yaml": (httpd_spec("escape", source="../"), 'spec.uploads[0].source: "../" is outside the specs directory'),
    "dupkey.yaml": (httpd_spec("dupkey", extra="  port: 9000\n"), 'invalid YAML: duplicate key "port"'),
    "dup1.yaml": (httpd_spec("twin"), 'metadata.name: duplicate name "twin": also used by'),
    "dup2.yaml": (httpd_spec("twin"), 'metadata.name: duplicate name "twin": also used by'),
    "notyaml.yaml": ("<html>: [unclosed\n", "invalid YAML:"),
    "empty.yaml": ("", "empty file: expected a Sandbox spec"),
}


def test_bad_specs_are_reported_one_line_each_and_the_good_one_still_applies(rc: Reconcile, docker_client) -> None:
    for name, (text, _) in BAD_SPECS.items():
        rc.write(name, text)
    (rc.specs / "link").symlink_to("/etc")
    rc.write("symlink.yaml", httpd_spec("symlink", source="link/"))
    rc.write("good.yaml", httpd_spec("good"))
    rc.write(".hidden.yaml", "not: [valid\n")
    rc.write("good.yaml~", "not: [valid\n")
    rc.write("notes.txt", "not: [valid\n")

    out = rc.expect(1, "validate")
    lines = out.splitlines()
    assert len(lines) == len(BAD_SPECS) + 1, out
    for name, (_, message) in BAD_SPECS.items():
        [line] = [ln for ln in lines if ln.startswith(f"specs/{name}:")]
        where, _, rest = line.partition(": ")
        assert where.count(":") == 2 and all(p.isdigit() for p in where.split(":")[1:]), line  # file:line:col
        assert message in rest, line
    [link_line] = [ln for ln in lines if ln.startswith("specs/symlink.yaml:")]
    assert 'leads outside the specs directory (through a symlink)' in link_line

    out = rc.expect(1, "apply")
    assert "+ good (new sandbox): done" in out
    assert sorted(owned(docker_client, rc.instance)) == ["good"]
    assert page(ip_of(owned(docker_client, rc.instance)["good"], rc.instance)) == "hello from good\n"


def test_a_spec_that_becomes_invalid_leaves_its_sandbox_exactly_as_it_is(rc: Reconcile, docker_client) -> None:
    rc.write("web.yaml", httpd_spec("web"))
    rc.expect(0, "apply")
    before = owned(docker_client, rc.instance)["web"]
    routes_before = routes_in(rc)
    assert list(routes_before) == [f"rc-{rc.instance}-web"]

    for broken in (httpd_spec("web", extra="  ttl: forever\n"), "spec: [unclosed\n", ""):
        rc.write("web.yaml", broken)
        plan = rc.expect(1, "plan", "--detailed-exitcode")
        assert "  ! web (left as it is" in plan and "error: specs/web.yaml:" in plan, plan
        assert "Plan: 0 to add, 0 to change, 0 to destroy." in plan
        out = rc.expect(1, "apply")
        assert "error: specs/web.yaml:" in out
        now = owned(docker_client, rc.instance)["web"]
        assert (now["Id"], now["State"]) == (before["Id"], "running")
        assert routes_in(rc) == routes_before
        assert page(ip_of(now, rc.instance)) == "hello from web\n"

    rc.write("web.yaml", httpd_spec("web"))  # fixed again, unchanged: nothing to do
    rc.expect(0, "plan", "--detailed-exitcode")


def test_missing_image_is_an_error_for_that_sandbox_only_and_nothing_is_pulled(rc: Reconcile, docker_client) -> None:
    rc.write("web.yaml", httpd_spec("web"))
    rc.expect(0, "apply")
    kept_id = owned(docker_client, rc.instance)["web"]["Id"]
    missing = f"reconciler-test/missing-{rc.instance}:1"
    rc.write("web.yaml", httpd_spec("web", image=missing))
    rc.write("fresh.yaml", httpd_spec("fresh"))
    rc.write("ghost.yaml", httpd_spec("ghost", image=missing))
    since = int(time.time()) - 1
    out = rc.expect(1, "apply")
    until = int(time.time()) + 1
    assert f'error: ghost: image "{missing}" is not present on the engine; build or load it (no registry pull is attempted)' in out
    assert f'error: web: image "{missing}" is not present on the engine' in out
    assert "+ fresh (new sandbox): done" in out
    assert "ghost (" not in out.replace("error: ghost", "")  # no create was even tried
    running = owned(docker_client, rc.instance)
    assert sorted(running) == ["fresh", "web"]
    assert running["web"]["Id"] == kept_id and running["web"]["State"] == "running"
    pulls = [e for e in docker_client.events(since=since, until=until, decode=True, filters={"type": "image"})
             if e.get("Action") == "pull"]
    assert pulls == []


# --- status, url, destroy ----------------------------------------------------------------------------


def test_status_url_and_destroy(rc: Reconcile, docker_client) -> None:
    rc.write("web.yaml", httpd_spec("web", extra="  hostname: qa-web\n  ttl: 15m\n"))
    rc.write("api.yaml", httpd_spec("api"))
    rc.write("later.yaml", httpd_spec("later"))
    rc.expect(0, "apply")
    rc.remove("later.yaml")
    rc.write("new.yaml", httpd_spec("new"))  # not applied yet

    rows = {r["name"]: r for r in json.loads(rc.expect(0, "status", "--output", "json"))}
    assert sorted(rows) == ["api", "later", "new", "web"]
    web_id = owned(docker_client, rc.instance)["web"]["Id"]
    assert rows["web"]["state"] == "running"
    assert rows["web"]["url"] == "http://qa-web.localhost:8080"
    assert rows["web"]["container_id"] == web_id[:12]
    assert rows["web"]["created"] and rows["web"]["expires"]
    assert rows["api"]["expires"] is None and rows["api"]["url"] == f"http://{L.default_hostname(rc.instance, 'api')}.localhost:8080"
    assert rows["new"]["state"] == "absent" and rows["new"]["container_id"] is None
    assert rows["later"]["state"] == "running"  # still there until the next apply
    table = rc.expect(0, "status").splitlines()
    assert table[0].split() == ["NAME", "STATE", "URL", "CONTAINER", "CREATED", "EXPIRES"]
    assert [line.split()[0] for line in table[1:]] == ["api", "later", "new", "web"]

    assert rc.expect(0, "url", "web") == "http://qa-web.localhost:8080\n"
    assert rc.expect(0, "url", "later") == f"http://{L.default_hostname(rc.instance, 'later')}.localhost:8080\n"
    missing = rc("url", "nothere")
    assert missing.returncode == 3 and "nothere" in missing.stderr

    gone = rc("destroy", "nothere")
    assert gone.returncode == 3 and 'no sandbox nothere in instance' in gone.stderr
    assert rc("destroy", "Not_A_Name").returncode == 2
    assert rc("destroy").returncode == 2  # neither names nor --all
    assert rc.expect(0, "destroy", "web").splitlines() == ["  - web: destroyed"]
    assert sorted(owned(docker_client, rc.instance)) == ["api", "later"]
    assert f"rc-{rc.instance}-web" not in networks(docker_client, rc.instance)
    assert sorted(routes_in(rc)) == [f"rc-{rc.instance}-api", f"rc-{rc.instance}-later"]
    assert (rc.specs / "web.yaml").exists()  # spec files stay
    # The spec is still there, so the next plan creates it again.
    assert "  + web (new sandbox)" in rc.expect(2, "plan", "--detailed-exitcode")


# --- hardening -----------------------------------------------------------------------------------------


def test_sandbox_is_hardened(rc: Reconcile, docker_client) -> None:
    rc.write("web.yaml", httpd_spec("web"))
    rc.expect(0, "apply")
    raw = owned(docker_client, rc.instance)["web"]
    info = docker_client.api.inspect_container(raw["Id"])
    host = info["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(c.removeprefix("CAP_") for c in host["CapAdd"]) == sorted(BASE_CAPABILITIES)
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] == 64 * 1024**2 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert not host.get("Binds")
    assert [m["Type"] for m in info["Mounts"]] == []  # no host paths, no docker.sock
    assert "docker.sock" not in json.dumps(info)
    assert not host.get("PortBindings") and not host.get("PublishAllPorts")
    assert host["NetworkMode"] == f"rc-{rc.instance}-web"
    assert list(info["NetworkSettings"]["Networks"]) == [f"rc-{rc.instance}-web"]
    for mode in ("PidMode", "IpcMode", "UTSMode", "UsernsMode"):
        assert host.get(mode) in ("", "private", None), (mode, host.get(mode))
    assert host["LogConfig"]["Config"] == {"max-size": "10m", "max-file": "3"}
    network = docker_client.api.inspect_network(f"rc-{rc.instance}-web")
    assert network["Labels"][L.MANAGED] == "true" and network["Labels"][L.INSTANCE] == rc.instance
    assert list(network["Containers"]) == [raw["Id"]]  # its own network, alone on it

    # What the kernel actually enforces, seen from inside.
    status = docker_client.containers.get(raw["Id"]).exec_run(["cat", "/proc/1/status"]).output.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    bits = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
            "NET_BIND_SERVICE": 10}
    assert int(fields["CapBnd"].strip(), 16) == sum(1 << bits[c] for c in BASE_CAPABILITIES)
    assert int(fields["CapEff"].strip(), 16) == sum(1 << bits[c] for c in BASE_CAPABILITIES)


def test_uploads_keep_the_modes_of_existing_image_directories(rc: Reconcile, docker_client) -> None:
    rc.write(
        "modes.yaml",
        "apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {name: modes}\nspec:\n"
        "  image: reconciler-test/busybox:latest\n  command: [sleep, '300']\n"
        "  uploads:\n    - {content: \"x\\n\", target: /tmp/note.txt}\n"
        "    - {content: \"y\\n\", target: /new/dir/file.txt}\n",
    )
    rc.expect(0, "apply")
    raw = owned(docker_client, rc.instance)["modes"]
    api = docker_client.api
    exec_id = api.exec_create(raw["Id"], ["sh", "-c", "stat -c '%a %n' /tmp /new/dir; cat /tmp/note.txt"])["Id"]
    out = api.exec_start(exec_id).decode()
    assert "1777 /tmp" in out  # the image's sticky, world-writable /tmp is untouched
    assert "755 /new/dir" in out  # a missing parent is made by the engine
    assert out.endswith("x\n")
