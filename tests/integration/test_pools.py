"""Warm pools against the real engine and the real Traefik (issue 7): a claim from a
warm pool, refill to size, the empty-pool fallback, a changed pool spec, a deleted
pool, and the states a crash mid-claim leaves behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import helpers
import pytest
from watch_helpers import BUSYBOX, Watch, host_of, until

import reconciler.labels as L

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

LIMITS = "  resources: {memory: 64m, cpus: 0.5, pids: 64}\n"


def pool_yaml(name: str = "web", size: int = 2, env: dict[str, str] | None = None) -> str:
    env_line = f"  env: {json.dumps(env)}\n" if env else ""
    return (f"apiVersion: reconciler/v1\nkind: Pool\nmetadata: {{name: {name}}}\n"
            f"spec:\n  image: {BUSYBOX}\n  size: {size}\n{LIMITS}{env_line}")


def sandbox_yaml(name: str, pool: str = "web", text: str | None = None) -> str:
    """httpd serving an uploaded file (its text: ``text``, default ``<name> from a pool``)."""
    text = text or f"{name} from a pool"
    command = "mkdir -p /www && cp /app/index.html /www/ && exec httpd -f -p 8000 -h /www"
    return (f"apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {{name: {name}}}\n"
            f"spec:\n  image: {BUSYBOX}\n  command: {json.dumps(command)}\n  port: 8000\n  pool: {pool}\n{LIMITS}"
            f"  uploads: [{{content: {json.dumps(text + chr(10))}, target: /app/index.html}}]\n")


def members(client, instance: str, pool: str = "web", state: str | None = "running") -> dict[str, dict]:  # noqa: ANN001
    """Idle members of ``pool`` (by container id): owned, kind pool-member, still named as members."""
    labels = [f"{L.INSTANCE}={instance}", f"{L.KIND}=pool-member", f"{L.POOL}={pool}"]
    out = {}
    for c in client.api.containers(all=True, filters={"label": labels}):
        name = c["Names"][0].lstrip("/")
        if L.claimed_sandbox(instance, name) is None and (state is None or c["State"] == state):
            out[c["Id"]] = c
    return out


def container_named(client, name: str) -> dict | None:  # noqa: ANN001
    found = [c for c in client.api.containers(all=True, filters={"name": f"^/{name}$"})]
    return found[0] if found else None


def owned_networks(client, instance: str) -> set[str]:  # noqa: ANN001
    return {n["Name"] for n in client.api.networks(filters={"label": f"{L.INSTANCE}={instance}"})}


def pool_row(watch: Watch, name: str = "web") -> dict:
    out = watch.cli("status", "--output", "json")
    assert out.returncode == 0, out.stderr
    return next(r for r in json.loads(out.stdout) if r["kind"] == "pool" and r["name"] == name)


@pytest.fixture
def watch(instance: str, tmp_path: Path, traefik) -> Watch:  # noqa: ANN001
    w = Watch(instance, tmp_path, traefik_dir=traefik.dynamic_dir)
    yield w
    w.kill()


def warm(watch: Watch, client, size: int, not_in: set[str] = frozenset()) -> dict[str, dict]:  # noqa: ANN001
    """Wait until the pool has ``size`` running idle members, none of them in ``not_in``."""
    def full() -> dict[str, dict] | None:
        found = members(client, watch.instance)
        return found if len(found) == size and not set(found) & set(not_in) else None

    return watch.until(full, 30, f"{size} idle members running")


def claim_one(watch: Watch, client, name: str, size: int) -> dict:  # noqa: ANN001
    """Start the watch on a pool of ``size``, let sandbox ``name`` claim a member once it is warm."""
    watch.write("web.yaml", pool_yaml(size=size))
    watch.start()
    warm(watch, client, size)
    watch.write(f"{name}.yaml", sandbox_yaml(name))
    watch.wait_event("ready", name)
    claimed = container_named(client, L.container_name(watch.instance, name))
    assert claimed["Labels"][L.KIND] == "pool-member"
    return claimed


def route_text(traefik) -> str:  # noqa: ANN001
    return "".join(p.read_text() for p in traefik.dynamic_dir.glob("*.yml"))


def test_a_sandbox_claims_a_warm_member_and_the_pool_refills(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    watch.write("web.yaml", pool_yaml(size=2))
    watch.start()
    idle = warm(watch, docker_client, 2)
    assert owned_networks(docker_client, watch.instance) == {c["Names"][0].lstrip("/") for c in idle.values()}
    assert "url:" not in route_text(traefik)  # idle members are never routed
    for cid, c in idle.items():  # hardened and limited like any sandbox, each on a network of its own
        host = docker_client.api.inspect_container(cid)["HostConfig"]
        assert host["Init"] is True and host["CapDrop"] == ["ALL"] and host["Privileged"] is False
        assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["IpcMode"] == "private"
        assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (
            64 * 1024**2, 64 * 1024**2, 500_000_000, 64)
        assert host["NetworkMode"] == c["Names"][0].lstrip("/")

    watch.write("a.yaml", sandbox_yaml("a"))
    watch.wait_event("ready", "a")
    host = host_of(watch, "a")
    resp = traefik.wait_status(host, 200)
    assert resp.text == "a from a pool\n"  # the uploaded file, served by the spec's command
    claimed = container_named(docker_client, L.container_name(watch.instance, "a"))
    assert claimed is not None and claimed["Id"] in idle  # a former pool member took the sandbox's name
    assert claimed["Labels"][L.KIND] == "pool-member"
    created = watch.seen("created", "a")
    assert len(created) == 1 and created[0]["message"] == "new sandbox; claimed from pool web"

    # The command is the container's main process (a child of init), not a stray exec.
    top = docker_client.api.top(claimed["Id"])
    commands = [p[-1] for p in top["Processes"]]
    assert len(commands) == 2 and commands[1].startswith("httpd -f -p 8000"), commands

    # The loop tops the pool back up to its size in the background.
    refilled = warm(watch, docker_client, 2)
    assert claimed["Id"] not in refilled and len(set(refilled) - set(idle)) == 1
    watch.until(lambda: pool_row(watch) == {"kind": "pool", "name": "web", "idle": 2, "claimed": 1, "target": 2},
                10, "status: 2 idle, 1 claimed, target 2")
    rows = {r["name"]: r for r in json.loads(watch.cli("status", "--output", "json").stdout) if r["kind"] == "sandbox"}
    assert rows["a"]["state"] == "running" and rows["a"]["pool"] == "web"
    assert rows["a"]["container_id"] == claimed["Id"][:12]
    text = watch.cli("status").stdout
    assert "POOL  IDLE  CLAIMED  TARGET" in text and "web   2     1        2" in text

    # Stopped from outside, it restarts with its command: same container, same URL.
    docker_client.api.stop(claimed["Id"], timeout=1)
    watch.wait_event("restarted", "a")
    assert traefik.wait_status(host_of(watch, "a"), 200).text == "a from a pool\n"
    assert container_named(docker_client, L.container_name(watch.instance, "a"))["Id"] == claimed["Id"]

    # Deleted like any sandbox: its container and the network it came with go, the route too.
    (watch.specs / "a.yaml").unlink()
    watch.wait_event("destroyed", "a", contains="no spec")
    traefik.wait_status(host, 404)
    until(lambda: container_named(docker_client, L.container_name(watch.instance, "a")) is None, 10, "gone")
    assert claimed["Names"][0].lstrip("/") not in owned_networks(docker_client, watch.instance)
    member_net = L.member_name(watch.instance, "web", claimed["Labels"][L.MEMBER])
    until(lambda: member_net not in owned_networks(docker_client, watch.instance), 10, "its network gone")


def test_an_empty_pool_falls_back_to_a_normal_create(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    watch.write("web.yaml", pool_yaml(size=0))
    watch.start()
    watch.write("b.yaml", sandbox_yaml("b"))
    watch.wait_event("ready", "b")
    assert traefik.wait_status(host_of(watch, "b"), 200).text == "b from a pool\n"
    created = watch.seen("created", "b")
    assert [e["message"] for e in created] == ["new sandbox; pool web is empty, created normally"]
    box = container_named(docker_client, L.container_name(watch.instance, "b"))
    assert box["Labels"][L.KIND] == "sandbox" and L.POOL not in box["Labels"]
    out = watch.cli("events", "--name", "b")
    assert "pool web is empty, created normally" in out.stdout


def test_a_changed_pool_spec_replaces_idle_members_never_claimed_ones(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    claimed = claim_one(watch, docker_client, "c", size=1)
    old = warm(watch, docker_client, 1)
    (old_hash,) = {c["Labels"][L.POOL_HASH] for c in old.values()}

    watch.write("web.yaml", pool_yaml(size=1, env={"FLAVOUR": "new"}))
    new = warm(watch, docker_client, 1, not_in=set(old))
    assert {c["Labels"][L.POOL_HASH] for c in new.values()} != {old_hash}
    env = docker_client.api.inspect_container(next(iter(new)))["Config"]["Env"]
    assert "FLAVOUR=new" in env
    watch.wait_event("pool", "web", contains="removed 1 idle member(s): the pool spec changed")
    # The claimed one is the sandbox's now: untouched, still serving.
    still = container_named(docker_client, L.container_name(watch.instance, "c"))
    assert still["Id"] == claimed["Id"] and still["State"] == "running"
    assert traefik.wait_status(host_of(watch, "c"), 200).text == "c from a pool\n"
    assert not watch.seen("recreated", "c") and not watch.seen("destroyed", "c")


def test_deleting_the_pool_removes_idle_members_only(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    claimed = claim_one(watch, docker_client, "d", size=2)
    (watch.specs / "web.yaml").unlink()
    watch.until(lambda: not members(docker_client, watch.instance, state=None), 30, "every idle member gone")
    member_net = L.member_name(watch.instance, "web", claimed["Labels"][L.MEMBER])
    watch.until(lambda: owned_networks(docker_client, watch.instance) == {member_net}, 10,
                "only the claimed member's network left")
    still = container_named(docker_client, L.container_name(watch.instance, "d"))
    assert still["Id"] == claimed["Id"] and still["State"] == "running"
    assert traefik.wait_status(host_of(watch, "d"), 200).text == "d from a pool\n"
    assert pool_row(watch) == {"kind": "pool", "name": "web", "idle": 0, "claimed": 1, "target": None}


def run(watch: Watch, *args: str) -> subprocess.CompletedProcess[str]:
    out = watch.cli(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.mark.parametrize("crash_at", ["after the rename", "after the record, before the rename"])
def test_a_crash_mid_claim_never_counts_a_container_twice_or_leaks_one(
    watch: Watch, docker_client, crash_at: str  # noqa: ANN001
) -> None:
    """The two states a ``kill -9`` inside a claim can leave: the member renamed with
    its record unfinished, or the record written and the member still idle."""
    from reconciler.claims import ClaimBook
    from reconciler.container_config import desired_sandbox
    from reconciler.loader import load_specs
    from reconciler.settings import Settings

    watch.write("web.yaml", pool_yaml(size=1))
    run(watch, "apply")
    ((member_id, member),) = members(docker_client, watch.instance).items()
    watch.write("e.yaml", sandbox_yaml("e"))
    want = desired_sandbox(load_specs(watch.specs).specs["e"], watch.instance, member["ImageID"])
    settings = Settings(specs=watch.specs, state_dir=watch.state_dir, instance=watch.instance,
                        traefik_dir=watch.traefik_dir)
    book = ClaimBook.for_settings(settings)
    book.begin("e", member_id, want.labels(1_700_000_000))  # as claim() does first
    if crash_at == "after the rename":
        docker_client.api.rename(member_id, L.container_name(watch.instance, "e"))
    book.close()
    plan = run(watch, "plan").stdout
    if crash_at == "after the rename":
        assert "-/+ e (interrupted create (never started); pool web is empty, created normally)" in plan
    else:
        assert "  + e (new sandbox; claimed from pool web)" in plan
    run(watch, "apply")
    run(watch, "apply")  # the refill, then nothing more to do
    assert run(watch, "plan", "--detailed-exitcode").stdout.startswith("No changes.")
    boxes = [c for c in docker_client.api.containers(all=True, filters={"label": f"{L.INSTANCE}={watch.instance}"})]
    names = sorted(c["Names"][0].lstrip("/") for c in boxes)
    sandbox = L.container_name(watch.instance, "e")
    assert names.count(sandbox) == 1 and len(names) == 2, names  # the sandbox, and one idle member
    assert all(c["State"] == "running" for c in boxes)
    # Every network belongs to a container that exists: nothing leaked.
    nets = owned_networks(docker_client, watch.instance)
    expected = {n for n in names if n != sandbox}
    running_box = container_named(docker_client, sandbox)
    expected.add(L.member_name(watch.instance, "web", running_box["Labels"][L.MEMBER])
                 if running_box["Labels"].get(L.KIND) == "pool-member" else sandbox)
    assert nets == expected, (nets, expected)
    if crash_at == "after the rename":
        assert member_id not in {c["Id"] for c in boxes}  # the half-claimed one was replaced


def test_a_claim_that_fails_falls_back_to_a_normal_create(tmp_path: Path, instance: str, docker_client) -> None:  # noqa: ANN001
    """The member the plan picked is gone when the claim runs: the sandbox is created
    normally, and the change's cause (what the events log shows) says why."""
    from reconciler.cli import context_for
    from reconciler.controller import apply_once, make_plan
    from reconciler.execute import execute
    from reconciler.settings import Settings

    specs = tmp_path / "specs"
    specs.mkdir()
    settings = Settings(specs=specs, state_dir=tmp_path / "state", traefik_dir=tmp_path / "dynamic", instance=instance)
    (specs / "web.yaml").write_text(pool_yaml(size=1))
    ctx = context_for(settings)
    apply_once(ctx)
    (specs / "f.yaml").write_text(sandbox_yaml("f"))
    _, _, plan = make_plan(ctx)
    (change,) = plan.changes
    assert change.claim is not None
    docker_client.api.remove_container(change.claim.container_id, force=True)
    (result,) = execute(plan, ctx.engine)
    assert result.ok and result.change.claim is None
    assert result.change.cause.startswith("new sandbox; claim from pool web failed (")
    assert result.change.cause.endswith("), created normally")
    box = container_named(docker_client, L.container_name(instance, "f"))
    assert box["Id"] == result.container_id and box["Labels"][L.KIND] == "sandbox" and box["State"] == "running"


def test_reconcile_new_with_pool_claims_a_warm_member(watch: Watch, traefik, docker_client) -> None:  # noqa: ANN001
    # A pool with the default limits, as `reconcile new` writes none.
    watch.write("quick.yaml", f"apiVersion: reconciler/v1\nkind: Pool\nmetadata: {{name: quick}}\n"
                              f"spec:\n  image: {BUSYBOX}\n  size: 1\n")
    watch.start()
    (idle,) = watch.until(lambda: members(docker_client, watch.instance, "quick") or None, 30, "1 idle member")
    # The instance's options go before `--`: everything after it is the command.
    made = helpers.run_cli(["new", "fast", "--image", BUSYBOX, "--port", "8000", "--pool", "quick", "--wait",
                            *watch.globals(), "--",
                            "sh -c 'mkdir -p /www && echo fast > /www/index.html && exec httpd -f -p 8000 -h /www'"],
                           env=watch.env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "pool: quick" in (watch.specs / "fast.yaml").read_text()
    assert traefik.wait_status(host_of(watch, "fast"), 200).text == "fast\n"
    claimed = container_named(docker_client, L.container_name(watch.instance, "fast"))
    assert claimed is not None and claimed["Id"] == idle
    assert watch.wait_event("created", "fast")["message"] == "new sandbox; claimed from pool quick"
