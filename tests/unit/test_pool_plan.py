"""Warm pools, the pure part: loading ``kind: Pool`` specs, matching, claims in the
plan, refills, replacements, removals, and how claimed members are presented."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.container_config import desired_sandbox
from reconciler.loader import Desired, load_specs
from reconciler.observed import MemberNetwork, Observed, ObservedMember, ObservedSandbox
from reconciler.plan import compute_plan, render_json, render_text
from reconciler.pools import (
    Claim,
    claim_script,
    command_argv,
    desired_pool,
    encode_line,
    mismatch,
    present_claimed,
)

INSTANCE = "t"
IMAGE = "reconciler-test/busybox:latest"
IMAGE_ID = "sha256:" + "b" * 64
NOW = 1_800_000_000.0


def pool_yaml(name: str = "web", size: int = 3, env: str = "{A: '1'}", extra: str = "") -> str:
    return (f"apiVersion: reconciler/v1\nkind: Pool\nmetadata: {{name: {name}}}\n"
            f"spec:\n  image: {IMAGE}\n  size: {size}\n  env: {env}\n{extra}")


def sandbox_yaml(name: str, pool: str | None = "web", env: str = "{A: '1'}", extra: str = "") -> str:
    line = f"  pool: {pool}\n" if pool else ""
    return (f"apiVersion: reconciler/v1\nkind: Sandbox\nmetadata: {{name: {name}}}\n"
            f"spec:\n  image: {IMAGE}\n  command: [httpd, -f, -p, '8000']\n  port: 8000\n  env: {env}\n{line}{extra}")


def load(tmp_path: Path, files: dict[str, str]) -> Desired:
    specs = tmp_path / "specs"
    specs.mkdir(exist_ok=True)
    for old in specs.glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (specs / name).write_text(text)
    return load_specs(specs)


def member(desired: Desired, pool: str = "web", member_id: str = "aaaaaa", age: float = 10.0,
           state: str = "running", pool_hash: str | None = None) -> ObservedMember:
    dp = desired_pool(desired.pools[pool], INSTANCE, IMAGE_ID)
    labels = dp.labels(member_id, int(NOW - age))
    if pool_hash is not None:
        labels[L.POOL_HASH] = pool_hash
    return ObservedMember(pool, member_id, f"id-{member_id}".ljust(64, "0"), dp.member_name(member_id), state,
                          labels, IMAGE_ID, "10.213.0.2")


def observed(*members: ObservedMember, sandboxes: dict[str, ObservedSandbox] | None = None,
             networks: dict[str, MemberNetwork] | None = None, support: bool = True) -> Observed:
    return Observed(INSTANCE, sandboxes=sandboxes or {}, images={IMAGE: IMAGE_ID}, members=tuple(members),
                    member_networks=networks or {}, pool_support=support)


def claimed_box(desired: Desired, name: str, from_member: ObservedMember) -> ObservedSandbox:
    """A sandbox running in a former member (as the engine presents it)."""
    want = desired_sandbox(desired.specs[name], INSTANCE, IMAGE_ID)
    box = ObservedSandbox("", from_member.container_id, L.container_name(INSTANCE, name), "running",
                          from_member.labels, image_id=IMAGE_ID, ip="10.213.0.2")
    return present_claimed(box, name, Claim(name, from_member.container_id, want.labels(int(NOW)), True))


# --- loading ----------------------------------------------------------------------------------


def test_a_pool_spec_loads_beside_sandboxes(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(extra="  max_age: 10m\n  egress: false\n"),
                              "a.yaml": sandbox_yaml("a")})
    assert desired.errors == ()
    assert set(desired.pools) == {"web"} and set(desired.specs) == {"a"}
    body = desired.pools["web"].spec.spec
    assert (body.size, body.max_age, body.egress, body.env) == (3, 600, False, {"A": "1"})
    assert desired.specs["a"].spec.spec.pool == "web"


@pytest.mark.parametrize("text, expected", [
    (pool_yaml(extra="  sise: 2\n"), 'specs/web.yaml:8:3: spec.sise: unknown field (did you mean "size"?)'),
    (pool_yaml(size=-1), "specs/web.yaml:6:3: spec.size: expected a number >= 0, got -1"),
    (pool_yaml(extra="  max_age: soon\n"),
     'specs/web.yaml:8:3: spec.max_age: expected a duration like 90s, 15m, 24h or 7d, got "soon"'),
    (pool_yaml(extra="  command: [sh]\n"), "specs/web.yaml:8:3: spec.command: unknown field"),
    ("apiVersion: reconciler/v1\nkind: Pool\nmetadata: {name: web}\nspec: {image: x}\n",
     "specs/web.yaml:4:1: spec.size: required field is missing"),
])
def test_pool_errors_are_file_line_col(tmp_path, monkeypatch, text, expected):
    monkeypatch.chdir(tmp_path)
    desired = load(tmp_path, {"web.yaml": text})
    assert [str(e) for e in desired.errors] == [expected]
    assert desired.pools == {} and "web" in desired.protected_names


def test_a_sandbox_pool_must_be_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    desired = load(tmp_path, {"a.yaml": sandbox_yaml("a", pool="Web_1")})
    assert len(desired.errors) == 1 and str(desired.errors[0]).startswith("specs/a.yaml:9:3: spec.pool: expected a name")


def test_pools_and_sandboxes_share_one_namespace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    desired = load(tmp_path, {"a.yaml": sandbox_yaml("web", pool=None), "b.yaml": pool_yaml("web")})
    assert {e.message for e in desired.errors} == {
        'duplicate name "web": also used by specs/b.yaml', 'duplicate name "web": also used by specs/a.yaml'}


# --- matching ---------------------------------------------------------------------------------


def test_matching_needs_every_create_time_field_equal(tmp_path):
    desired = load(tmp_path, {
        "web.yaml": pool_yaml(),
        "same.yaml": sandbox_yaml("same", extra="  ttl: 1h\n  uploads: [{content: hi, target: /x}]\n"),
        "env.yaml": sandbox_yaml("env", env="{A: '2'}"),
        "more.yaml": sandbox_yaml("more", extra="  hostname: mine\n  user: '1000'\n  volumes: [{name: d, target: /d}]\n"
                                               "  resources: {memory: 1g}\n  egress: false\n  workdir: /srv\n"
                                               "  capabilities: [SYS_PTRACE]\n"),
    })
    pool = desired_pool(desired.pools["web"], INSTANCE, IMAGE_ID)
    assert mismatch(pool, desired_sandbox(desired.specs["same"], INSTANCE, IMAGE_ID)) == []
    assert mismatch(pool, desired_sandbox(desired.specs["env"], INSTANCE, IMAGE_ID)) == ["spec.env"]
    assert mismatch(pool, desired_sandbox(desired.specs["same"], INSTANCE, "sha256:other")) == ["spec.image"]
    assert mismatch(pool, desired_sandbox(desired.specs["more"], INSTANCE, IMAGE_ID)) == [
        "spec.resources", "spec.workdir", "spec.egress", "spec.volumes", "spec.user", "spec.hostname",
        "spec.capabilities"]


# --- planning ---------------------------------------------------------------------------------


def test_an_empty_pool_is_filled_to_size(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=3)})
    plan = compute_plan(desired, observed(), now=NOW)
    assert [(c.action, c.pool) for c in plan.pool_changes] == [("create", "web")] * 3
    assert [p.to_json() for p in plan.pools] == [{"name": "web", "idle": 0, "claimed": 0, "target": 3}]
    assert plan.has_changes and plan.counts() == (0, 0, 0)  # sandboxes only: members are counted apart
    assert render_text(plan) == (
        "  + pool web: 3 idle member(s) to start (0 of 3 idle)\n"
        + "Pools: 3 member(s) to start, 0 to remove.\n"
        + "Plan: 0 to add, 0 to change, 0 to destroy.\n"
    )


def test_a_full_pool_is_left_alone(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=2)})
    plan = compute_plan(desired, observed(member(desired, member_id="m1"), member(desired, member_id="m2")), now=NOW)
    assert plan.pool_changes == () and not plan.has_changes
    assert plan.pools[0].idle == 2
    assert render_text(plan).startswith("No changes.")


def test_a_sandbox_claims_the_oldest_idle_member_and_the_pool_is_refilled(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=2), "a.yaml": sandbox_yaml("a")})
    old, young = member(desired, member_id="old", age=100), member(desired, member_id="young", age=5)
    plan = compute_plan(desired, observed(young, old), now=NOW)
    (change,) = plan.changes
    assert (change.action, change.claim) == ("create", old)
    assert change.cause == "new sandbox; claimed from pool web"
    assert [(c.action, c.cause) for c in plan.pool_changes] == [("create", "refill: 1 of 2 idle")]
    assert render_json(plan)["changes"][0]["claim"] == old.container_id
    assert "  + a (new sandbox; claimed from pool web)" in render_text(plan)


def test_more_claimants_than_members_fall_back_to_a_normal_create(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a"), "b.yaml": sandbox_yaml("b")})
    plan = compute_plan(desired, observed(member(desired, member_id="m1")), now=NOW)
    a, b = plan.changes
    assert a.claim is not None and b.claim is None
    assert b.cause == "new sandbox; pool web is empty, created normally"


@pytest.mark.parametrize("files, cause", [
    ({"a.yaml": sandbox_yaml("a", env="{A: '2'}")}, "pool web does not match (spec.env), created normally"),
    ({"a.yaml": sandbox_yaml("a", pool="nope")}, "pool nope: there is no pool nope, created normally"),
    ({"a.yaml": sandbox_yaml("a"), "web.yaml": "apiVersion: reconciler/v1\nkind: Pool\nmetadata: {name: web}\n"
                                               "spec: {image: x, size: many}\n"},
     "pool web: its spec is invalid, created normally"),
])
def test_why_a_sandbox_is_not_claimed_is_in_its_cause(tmp_path, files, cause):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), **files})
    members = (member(desired, member_id="m1"),) if "web" in desired.pools else ()
    plan = compute_plan(desired, observed(*members), now=NOW)
    (change,) = [c for c in plan.changes if c.name == "a"]
    assert change.claim is None and change.cause == f"new sandbox; {cause}"


def test_an_engine_without_pools_creates_normally_and_says_so(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a")})
    plan = compute_plan(desired, observed(support=False), now=NOW)
    assert plan.changes[0].cause == "new sandbox; pool web: this engine has no warm pools, created normally"
    assert plan.pool_changes == ()
    assert [p.name for p in plan.problems] == ["web"] and "docker engine" in plan.problems[0].message


def test_a_missing_pool_image_is_a_problem_and_its_members_stay(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1)})
    stays = member(desired, member_id="m1")
    plan = compute_plan(desired, replace(observed(stays), images={}), now=NOW)
    assert plan.pool_changes == () and 'image "reconciler-test/busybox:latest" is not present' in plan.problems[0].message


def test_a_changed_pool_spec_replaces_idle_members_never_claimed_ones(tmp_path):
    before = load(tmp_path, {"web.yaml": pool_yaml(size=2), "a.yaml": sandbox_yaml("a")})
    idle = member(before, member_id="idle")
    used = claimed_box(before, "a", member(before, member_id="used"))
    after = load(tmp_path, {"web.yaml": pool_yaml(size=2, extra="  workdir: /srv\n"), "a.yaml": sandbox_yaml("a")})
    plan = compute_plan(after, observed(idle, sandboxes={"a": used}), now=NOW)
    assert plan.changes == () and plan.unchanged == ("a",)  # the claimed sandbox: its own spec did not change
    assert [(c.action, c.member.member if c.member else None, c.cause) for c in plan.pool_changes] == [
        ("destroy", "idle", "the pool spec changed"), ("create", None, "refill: 0 of 2 idle"),
        ("create", None, "refill: 1 of 2 idle")]
    assert [p.to_json() for p in plan.pools] == [{"name": "web", "idle": 0, "claimed": 1, "target": 2}]


def test_a_deleted_pool_removes_its_idle_members_only(tmp_path):
    before = load(tmp_path, {"web.yaml": pool_yaml(size=2), "a.yaml": sandbox_yaml("a")})
    idle = member(before, member_id="idle")
    used = claimed_box(before, "a", member(before, member_id="used"))
    after = load(tmp_path, {"a.yaml": sandbox_yaml("a")})
    plan = compute_plan(after, observed(idle, sandboxes={"a": used}), now=NOW)
    assert plan.changes == ()
    assert [(c.action, c.member.member, c.cause) for c in plan.pool_changes] == [
        ("destroy", "idle", "its pool was removed")]
    assert [p.to_json() for p in plan.pools] == [{"name": "web", "idle": 0, "claimed": 1, "target": None}]
    assert "  - pool web: idle member idle (its pool was removed)" in render_text(plan)


def test_members_of_an_unreadable_pool_spec_are_kept(tmp_path):
    before = load(tmp_path, {"web.yaml": pool_yaml(size=1)})
    idle = member(before, member_id="idle")
    after = load(tmp_path, {"web.yaml": pool_yaml(size=1, extra="  oops: [\n")})
    assert after.errors and "web.yaml" in after.protected_files
    assert compute_plan(after, observed(idle), now=NOW).pool_changes == ()


def test_old_exited_and_excess_members_go(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1, extra="  max_age: 60s\n")})
    members = (member(desired, member_id="old", age=61), member(desired, member_id="dead", state="exited"),
               member(desired, member_id="m1", age=20), member(desired, member_id="m2", age=10))
    plan = compute_plan(desired, observed(*members), now=NOW)
    assert sorted((c.member.member, c.cause) for c in plan.pool_changes) == [
        ("dead", "idle member is exited"), ("m1", "more idle members than size 1"),
        ("old", "idle longer than max_age 1m")]
    assert compute_plan(desired, observed(*members)).pools[0].idle == 3  # no clock: no max_age


def test_a_member_being_started_is_neither_claimed_nor_removed(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a")})
    starting = member(desired, member_id="new", age=1, state="created")
    plan = compute_plan(desired, observed(starting), now=NOW)
    assert plan.changes[0].claim is None
    assert [c.action for c in plan.pool_changes] == ["create"]


def test_members_a_refill_is_removing_are_not_claimed(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a")})
    going = member(desired, member_id="going")
    plan = compute_plan(desired, observed(going), now=NOW, unavailable=frozenset({going.container_id}))
    assert plan.changes[0].claim is None and "pool web is empty" in plan.changes[0].cause


def test_a_claimed_sandbox_with_a_changed_spec_is_recreated_from_the_pool(tmp_path):
    before = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a")})
    used = claimed_box(before, "a", member(before, member_id="used"))
    after = load(tmp_path, {"web.yaml": pool_yaml(size=1),
                            "a.yaml": sandbox_yaml("a").replace("'8000'", "'8001'").replace("8000\n", "8001\n")})
    spare = member(after, member_id="spare")
    plan = compute_plan(after, observed(spare, sandboxes={"a": used}), now=NOW)
    (change,) = plan.changes
    assert (change.action, change.observed, change.claim) == ("recreate", used, spare)
    assert change.cause == "spec.command, spec.port changed; claimed from pool web"


def test_orphan_member_networks_are_swept_once_old_enough(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1), "a.yaml": sandbox_yaml("a")})
    idle = member(desired, member_id="idle")
    used = claimed_box(desired, "a", member(desired, member_id="used"))
    nets = {name: MemberNetwork(name, name, "web", created)
            for name, created in [(idle.container_name, 0.0), (L.member_name(INSTANCE, "web", "used"), 0.0),
                                  (L.member_name(INSTANCE, "web", "gone"), 0.0),
                                  (L.member_name(INSTANCE, "web", "new"), NOW - 5)]}
    plan = compute_plan(desired, observed(idle, sandboxes={"a": used}, networks=nets), now=NOW)
    assert plan.orphan_networks == (L.member_name(INSTANCE, "web", "gone"),)


# --- presenting claimed members ------------------------------------------------------------


def test_a_complete_claim_shows_the_member_as_its_sandbox(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(), "a.yaml": sandbox_yaml("a", extra="  ttl: 1h\n")})
    want = desired_sandbox(desired.specs["a"], INSTANCE, IMAGE_ID)
    used = member(desired, member_id="used")
    box = claimed_box(desired, "a", used)
    assert (box.name, box.state, box.config_hash, box.port, box.ttl) == ("a", "running", want.config_hash, 8000, 3600)
    assert box.hostname == L.default_hostname(INSTANCE, "a") and box.created_at == int(NOW)
    assert (box.labels[L.POOL], box.labels[L.MEMBER]) == ("web", "used")  # the member's own stay
    assert compute_plan(desired, observed(sandboxes={"a": box}), now=NOW).unchanged == ("a",)


@pytest.mark.parametrize("claim", ["unfinished", "another container", "none"])
def test_an_interrupted_claim_is_shown_as_an_interrupted_create(tmp_path, claim):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=0), "a.yaml": sandbox_yaml("a")})
    want = desired_sandbox(desired.specs["a"], INSTANCE, IMAGE_ID)
    used = member(desired, member_id="used")
    record = {"unfinished": Claim("a", used.container_id, want.labels(int(NOW)), complete=False),
              "another container": Claim("a", "other", want.labels(int(NOW)), complete=True),
              "none": None}[claim]
    raw = ObservedSandbox("", used.container_id, L.container_name(INSTANCE, "a"), "running", used.labels,
                          image_id=IMAGE_ID)
    box = present_claimed(raw, "a", record)
    assert box.state == "created" and box.name == "a"
    (change,) = compute_plan(desired, observed(sandboxes={"a": box}), now=NOW).changes
    assert change.action == "recreate"  # replaced: never counted twice, never left half made


def test_claimed_and_idle_names_never_collide():
    assert L.claimed_sandbox("t", L.container_name("t", "web-1")) == "web-1"
    assert L.claimed_sandbox("t", L.member_name("t", "web", "ab12cd")) is None
    assert L.claimed_sandbox("t", L.container_name("u", "web")) is None


# --- the command a claim starts ---------------------------------------------------------


def test_the_claimed_command_is_what_docker_would_run():
    assert command_argv(["httpd", "-f"], ["/init"], ["sh"]) == ["/init", "httpd", "-f"]
    assert command_argv("echo $HOME; exec x", None, ["sh"]) == ["/bin/sh", "-c", "echo $HOME; exec x"]
    assert command_argv(None, None, ["python3"]) == ["python3"]
    assert command_argv(None, None, None) == []
    argv = ["/bin/sh", "-c", "echo 'it''s' $X \"$(id)\"\nexit 3", "a b"]
    assert shlex.split(claim_script(argv)) == ["exec", *argv]  # quoted for sh: nothing is expanded twice


@pytest.mark.parametrize("text", ["exec httpd -f\n", "exec /bin/sh -c 'printf \"%s\\n\" a\\\\b'\nexit 3\n", "é ☃ 100%\t\n"])
def test_a_command_survives_the_one_line_trip_to_the_idle_shell(text):
    """The idle shell's own read + printf %b (a local sh: no Docker) gives back every byte."""
    import subprocess

    out = subprocess.run(["/bin/sh", "-c", 'IFS= read -r line; printf "%b" "$line"'], input=encode_line(text),
                         capture_output=True, check=True)
    assert out.stdout == text.encode() and encode_line(text).count(b"\n") == 1


def test_plan_json_lists_pools(tmp_path):
    desired = load(tmp_path, {"web.yaml": pool_yaml(size=1)})
    out = render_json(compute_plan(desired, observed(), now=NOW))
    json.dumps(out)
    assert out["pools"] == [{"name": "web", "idle": 0, "claimed": 0, "target": 1}]
    assert out["pool_changes"] == [{"action": "create", "pool": "web", "cause": "refill: 0 of 1 idle",
                                    "container_id": None}]


def test_the_dashboard_shows_each_pool_from_the_plan(tmp_path):
    from reconciler.dashboard.readmodel import Snapshot, overview
    from reconciler.settings import Settings

    desired = load(tmp_path, {"web.yaml": pool_yaml(size=3), "a.yaml": sandbox_yaml("a")})
    used = claimed_box(desired, "a", member(desired, member_id="used"))
    obs = observed(member(desired, member_id="m1"), sandboxes={"a": used})
    snap = Snapshot(taken_at=NOW, settings=Settings(specs=tmp_path / "specs", instance=INSTANCE), desired=desired,
                    observed=obs, plan=compute_plan(desired, obs, now=NOW))
    (view,) = overview(snap).pools
    assert (view.name, view.ready, view.claimed, view.total, view.target) == ("web", 1, 1, 2, 3)


def test_claim_records_share_the_state_store_file(tmp_path):
    from reconciler.claims import ClaimBook, ClaimStoreError
    from reconciler.settings import Settings
    from reconciler.state import open_store, store_path

    settings = Settings(specs=tmp_path / "specs", state_dir=tmp_path / "state", instance=INSTANCE)
    book = ClaimBook.for_settings(settings)
    assert book.read() == {} and not store_path(settings).exists()  # reading never creates the store
    book.begin("a", "c1", {"reconciler.port": "8000"})
    assert book.read()["a"] == Claim("a", "c1", {"reconciler.port": "8000"}, False, book.read()["a"].claimed_at)
    book.finish("a", "c1")
    book.forget("a", "other")  # another container's record only
    assert book.read()["a"].complete
    with open_store(settings) as store:  # the state store opens the same file and keeps its own tables
        assert store.lifetimes() == {}
    book.begin("b", "c2", {})
    book.prune({"b": "c2"})
    assert set(book.read()) == {"a"}
    book.close()
    (tmp_path / "state" / f"{INSTANCE}.db").write_bytes(b"not a database" * 100)
    with pytest.raises(ClaimStoreError, match="check --state-dir"):
        ClaimBook.for_settings(settings).read()
