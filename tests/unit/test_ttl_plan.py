"""The planner's TTL and crash-hold cases (pure: ``now`` is a parameter), and the
lifetime rules behind them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.container_config import desired_sandbox
from reconciler.errors import SpecError
from reconciler.lifetime import Lifetime, describe, extended, from_labels, resolve, spec_hash
from reconciler.loader import Desired, LoadedSpec
from reconciler.observed import Observed, ObservedSandbox
from reconciler.plan import compute_plan, render_json, render_text
from reconciler.spec import SandboxSpec

INSTANCE = "test"
IMAGE = "reconciler-test/busybox:latest"
IMAGE_ID = "sha256:" + "b" * 64
T0 = 1_800_000_000.0  # when the first lifetime began


def loaded(name: str = "web", ttl: str | None = "60s", env: dict[str, str] | None = None) -> LoadedSpec:
    body: dict = {"image": IMAGE, "command": ["sleep", "1000"], "port": 8000, "env": env or {}}
    if ttl is not None:
        body["ttl"] = ttl
    spec = SandboxSpec.model_validate(
        {"apiVersion": "reconciler/v1", "kind": "Sandbox", "metadata": {"name": name}, "spec": body}
    )
    return LoadedSpec(path=Path(f"/specs/{name}.yaml"), rel=f"{name}.yaml", spec=spec, uploads=())


def desired(*specs: LoadedSpec, protected: tuple[str, ...] = ()) -> Desired:
    return Desired(specs={s.name: s for s in specs}, protected_names=frozenset(protected),
                   protected_files=frozenset(f"{n}.yaml" for n in protected))


def container(spec: LoadedSpec, created_at: float = T0, state: str = "running", image_id: str = IMAGE_ID) -> ObservedSandbox:
    labels = desired_sandbox(spec, INSTANCE, image_id).labels(int(created_at))
    return ObservedSandbox(name=spec.name, container_id=("c" + spec.name).ljust(64, "0"),
                           container_name=L.container_name(INSTANCE, spec.name), state=state,
                           labels=labels, image=IMAGE, image_id=image_id, ip="10.213.0.2")


def observed(*sandboxes: ObservedSandbox) -> Observed:
    return Observed(instance=INSTANCE, sandboxes={s.name: s for s in sandboxes}, images={IMAGE: IMAGE_ID})


def life_of(spec: LoadedSpec, born: float = T0, ttl: float | None = 60) -> Lifetime:
    return Lifetime(spec_hash(spec), born, born + ttl if ttl else None)


def test_a_new_sandbox_starts_its_lifetime_now() -> None:
    web = loaded()
    plan = compute_plan(desired(web), observed(), {}, now=T0)
    assert [(c.action, c.name) for c in plan.changes] == [("create", "web")]
    assert plan.lifetimes["web"] == Lifetime(spec_hash(web), T0, T0 + 60)


def test_a_live_sandbox_within_its_ttl_is_unchanged() -> None:
    web = loaded()
    plan = compute_plan(desired(web), observed(container(web)), {"web": life_of(web)}, now=T0 + 59)
    assert plan.changes == () and plan.unchanged == ("web",)


def test_expiry_destroys_the_sandbox_and_its_volumes_with_the_cause() -> None:
    web = loaded()
    plan = compute_plan(desired(web), observed(container(web)), {"web": life_of(web)}, now=T0 + 61)
    [change] = plan.changes
    assert (change.action, change.remove_volumes) == ("destroy", True)
    assert change.cause == "ttl expired 2027-01-15T08:01:00Z"
    assert plan.expired == ("web",)
    assert plan.lifetimes["web"].expired_at == T0 + 61
    assert "  - web (ttl expired 2027-01-15T08:01:00Z)" in render_text(plan).splitlines()
    assert render_text(plan).endswith("Plan: 0 to add, 0 to change, 1 to destroy.\n")


def test_an_expired_sandbox_stays_gone_while_its_spec_is_unchanged() -> None:
    web = loaded()
    gone = replace(life_of(web), expired_at=T0 + 61)
    plan = compute_plan(desired(web), observed(), {"web": gone}, now=T0 + 3600)
    assert plan.changes == ()
    assert plan.expired == ("web",) and plan.lifetimes["web"] == gone
    assert "  ! web (ttl expired 2027-01-15T08:01:00Z: not recreated" in render_text(plan)
    assert render_json(plan)["expired"] == [{"name": "web", "expires_at": T0 + 60}]


def test_an_edited_spec_starts_a_new_lifetime() -> None:
    old, new = loaded(), loaded(env={"V": "2"})
    gone = replace(life_of(old), expired_at=T0 + 61)
    now = T0 + 3600
    plan = compute_plan(desired(new), observed(), {"web": gone}, now=now)
    assert [(c.action, c.name) for c in plan.changes] == [("create", "web")]
    assert plan.lifetimes["web"] == Lifetime(spec_hash(new), now, now + 60)


def test_a_comment_or_reformat_is_not_an_edit() -> None:
    # The hash is over the parsed spec: the same spec parsed twice hashes the same.
    assert spec_hash(loaded()) == spec_hash(loaded())
    assert spec_hash(loaded()) != spec_hash(loaded(ttl="61s"))


def test_extend_pushes_the_expiry_and_the_sandbox_lives_on() -> None:
    web = loaded()
    longer = extended(life_of(web), 120, now=T0 + 30)
    assert longer.expires_at == T0 + 180 and longer.born_at == T0
    plan = compute_plan(desired(web), observed(container(web)), {"web": longer}, now=T0 + 100)
    assert plan.changes == ()


def test_extending_an_expired_sandbox_brings_it_back_from_now() -> None:
    web = loaded()
    gone = replace(life_of(web), expired_at=T0 + 61)
    back = extended(gone, 30, now=T0 + 1000)
    assert (back.expires_at, back.expired_at) == (T0 + 1030, None)
    plan = compute_plan(desired(web), observed(), {"web": back}, now=T0 + 1001)
    assert [(c.action, c.name) for c in plan.changes] == [("create", "web")]


def test_extend_without_a_ttl_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ttl"):
        extended(life_of(loaded(ttl=None), ttl=None), 60, now=T0)


def test_a_recreate_keeps_the_lifetime() -> None:
    web = loaded()
    stale = container(web, image_id="sha256:" + "0" * 64)  # the image was rebuilt since
    plan = compute_plan(desired(web), observed(stale), {"web": life_of(web)}, now=T0 + 10)
    assert [(c.action, c.name) for c in plan.changes] == [("recreate", "web")]
    assert plan.lifetimes["web"].born_at == T0


def test_without_a_stored_record_the_container_labels_keep_the_lifetime() -> None:
    # A lost or new state dir: the created-at label still ends the lifetime on time.
    web = loaded()
    plan = compute_plan(desired(web), observed(container(web, created_at=T0)), {}, now=T0 + 61)
    assert [(c.action, c.cause) for c in plan.changes] == [("destroy", "ttl expired 2027-01-15T08:01:00Z")]
    plan = compute_plan(desired(web), observed(container(web, created_at=T0)), {}, now=T0 + 30)
    assert plan.changes == () and plan.lifetimes["web"].born_at == T0


def test_a_container_of_another_version_does_not_lend_its_age() -> None:
    old, new = loaded(), loaded(env={"V": "2"})
    plan = compute_plan(desired(new), observed(container(old, created_at=T0)), {}, now=T0 + 61)
    assert [c.action for c in plan.changes] == ["recreate"]
    assert plan.lifetimes["web"].born_at == T0 + 61


def test_a_sandbox_with_an_invalid_spec_still_expires() -> None:
    web = loaded()
    plan = compute_plan(desired(protected=("web",)), observed(container(web)), {"web": life_of(web)}, now=T0 + 61)
    assert [(c.action, c.name) for c in plan.changes] == [("destroy", "web")]
    plan = compute_plan(desired(protected=("web",)), observed(container(web)), {"web": life_of(web)}, now=T0 + 1)
    assert plan.changes == () and plan.kept == ("web",) and plan.lifetimes["web"] == life_of(web)


def test_lifetimes_are_forgotten_only_when_the_spec_is_surely_gone() -> None:
    web, api = loaded(), loaded("api")
    stored = {"web": life_of(web), "api": life_of(api)}
    plan = compute_plan(desired(web), observed(container(web)), stored, now=T0 + 1)
    assert set(plan.lifetimes) == {"web"}
    # A spec file is unreadable (maybe api's, half-written): api's lifetime is kept.
    broken = replace(desired(web), errors=(SpecError("specs/x.yaml", 3, 1, None, "invalid YAML"),))
    plan = compute_plan(broken, observed(container(web)), stored, now=T0 + 1)
    assert set(plan.lifetimes) == {"web", "api"}


def test_an_expired_sandboxes_leftover_network_is_an_orphan() -> None:
    from reconciler.observed import ObservedNetwork

    web = loaded()
    gone = replace(life_of(web), expired_at=T0 + 61)
    net = ObservedNetwork(L.network_name(INSTANCE, "web"), "n1", "web")
    obs = replace(observed(), networks={net.name: net})
    plan = compute_plan(desired(web), obs, {"web": gone}, now=T0 + 100)
    assert plan.orphan_networks == (net.name,)


def test_held_restarts_are_not_started() -> None:
    web = loaded()
    obs = observed(container(web, state="exited"))
    plan = compute_plan(desired(web), obs, {"web": life_of(web)}, now=T0 + 1, hold={"web": "crash loop"})
    assert plan.changes == () and plan.held == (("web", "crash loop"),)
    assert "  ! web (restart held: crash loop)" in render_text(plan)
    plan = compute_plan(desired(web), obs, {"web": life_of(web)}, now=T0 + 1)
    assert [(c.action, c.cause) for c in plan.changes] == [("start", "container is exited")]


def test_a_container_that_never_started_is_recreated() -> None:
    # Left by a kill -9 between create and start: its uploads may be missing.
    web = loaded()
    plan = compute_plan(desired(web), observed(container(web, state="created")), {}, now=T0)
    assert [(c.action, c.cause) for c in plan.changes] == [("recreate", "interrupted create (never started)")]


def test_without_now_there_is_no_ttl_logic() -> None:
    web = loaded()
    plan = compute_plan(desired(web), observed(container(web)), {"web": life_of(web)})
    assert plan.changes == () and plan.lifetimes == {} and plan.expired == ()


def test_resolve_and_describe() -> None:
    web = loaded()
    have = container(web, created_at=T0 - 5)
    want = desired_sandbox(web, INSTANCE, IMAGE_ID)
    assert resolve(web, want, have, None, now=T0).born_at == T0 - 5
    assert resolve(web, want, have, life_of(web), now=T0).born_at == T0
    assert from_labels(have) == Lifetime("", T0 - 5, T0 + 55)
    assert describe(life_of(web), now=T0 + 30) == "in 30s"
    assert describe(life_of(web), now=T0 + 60) == "expired 2027-01-15T08:01:00Z"
    assert describe(life_of(web, ttl=None), now=T0) is None
