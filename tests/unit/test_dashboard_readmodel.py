"""The dashboard's read model: snapshot in, rows out. Pure; built through the real planner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reconciler.dashboard import synthetic as syn
from reconciler.dashboard.readmodel import Snapshot, StoreView, overview, sandbox_rows, state_counts
from reconciler.dashboard.usage import Usage
from reconciler.errors import SpecError
from reconciler.lifetime import Lifetime
from reconciler.loader import Desired
from reconciler.observed import Observed
from reconciler.plan import compute_plan
from reconciler.settings import Settings
from reconciler.status import Condition

NOW = 1_800_000_000.0
SPECS = Path("/specs")
INSTANCE = "unit"


def snapshot(specs=(), containers=(), lifetimes=None, ready=(), conditions=None, usage=None, errors=(),
             protected_names=frozenset(), now=NOW) -> Snapshot:
    desired = Desired(specs={s.name: s for s in specs}, errors=tuple(errors),
                      protected_files=frozenset(e.path for e in errors), protected_names=protected_names)
    observed = Observed(instance=INSTANCE, sandboxes={c.name: c for c in containers},
                        images={syn.IMAGE: syn.IMAGE_ID})
    plan = compute_plan(desired, observed, lifetimes or {}, now)
    return Snapshot(taken_at=now, settings=Settings(specs=SPECS, instance=INSTANCE), desired=desired,
                    observed=observed, plan=plan, ready=frozenset(ready), usage=usage or {},
                    store=StoreView(conditions=conditions or {}))


def row(snap: Snapshot, name: str):
    return next(r for r in sandbox_rows(snap) if r.name == name)


def running(name: str, created: int = int(NOW) - 120, **spec):
    loaded = syn.loaded_spec(name, SPECS, **spec)
    return loaded, syn.observed_sandbox(loaded, INSTANCE, created)


def test_ready_sandbox_row_has_url_image_age_ttl_and_usage():
    loaded, have = running("web", ttl=600)
    life = Lifetime(syn_hash(loaded), NOW - 120, NOW + 480)
    snap = snapshot([loaded], [have], lifetimes={"web": life}, ready={"web"},
                    usage={have.container_id: Usage(12.5, 3 * 1024 * 1024)})
    r = row(snap, "web")
    assert (r.state, r.tone, r.reason) == ("ready", "ok", "Ready")
    assert r.url and r.url.startswith("http://qa-") and r.url.endswith(".localhost:8080")
    assert r.image == syn.IMAGE
    assert r.age_seconds == 120
    assert r.expires_at == NOW + 480 and r.ttl_left_seconds == 480
    assert (r.cpu_percent, r.memory_bytes) == (12.5, 3 * 1024 * 1024)
    assert r.pending is None


def test_extended_lifetime_is_the_expiry_shown():
    loaded, have = running("web", ttl=600)
    longer = Lifetime(syn_hash(loaded), NOW - 120, NOW + 480 + 3600)
    assert row(snapshot([loaded], [have], lifetimes={"web": longer}, ready={"web"}), "web").ttl_left_seconds == 4080


def test_running_but_not_answering_is_starting():
    loaded, have = running("web")
    r = row(snapshot([loaded], [have]), "web")
    assert (r.state, r.tone, r.reason) == ("starting", "busy", "WaitingForPort")


def test_a_ready_condition_from_the_loop_counts_as_answering():
    loaded, have = running("web")
    ready = Condition("Ready", True, "Ready", "answering", NOW - 5)
    assert row(snapshot([loaded], [have], conditions={"web": (ready,)}), "web").state == "ready"


def test_spec_without_container_is_pending_with_the_plan_line():
    loaded = syn.loaded_spec("new", SPECS)
    r = row(snapshot([loaded]), "new")
    assert (r.state, r.reason, r.message) == ("pending", "NotCreated", "new sandbox")
    assert r.pending is not None and (r.pending.action, r.pending.symbol) == ("create", "+")
    assert r.url is None  # nothing to link to yet


def test_changed_spec_is_reconciling_outdated_with_the_cause():
    old = syn.loaded_spec("web", SPECS, env={"V": "1"})
    have = syn.observed_sandbox(old, INSTANCE, int(NOW) - 10)
    r = row(snapshot([syn.loaded_spec("web", SPECS, env={"V": "2"})], [have], ready={"web"}), "web")
    assert (r.state, r.reason) == ("reconciling", "Outdated")
    assert "spec.env" in r.message and r.pending.action == "recreate"


def test_exited_container_is_stopped_and_red():
    loaded = syn.loaded_spec("web", SPECS)
    have = syn.observed_sandbox(loaded, INSTANCE, int(NOW) - 10, state="exited")
    r = row(snapshot([loaded], [have]), "web")
    assert (r.state, r.tone) == ("stopped", "bad")
    assert r.reason.startswith("Exited (1)")


def test_crash_loop_condition_is_stalled_with_its_message():
    loaded = syn.loaded_spec("web", SPECS)
    have = syn.observed_sandbox(loaded, INSTANCE, int(NOW) - 10, state="exited")
    crash = Condition("Stalled", True, "CrashLoop", "exited with code 1; restart #3 in 4s", NOW)
    r = row(snapshot([loaded], [have], conditions={"web": (crash,)}), "web")
    assert (r.state, r.tone, r.reason) == ("stalled", "bad", "CrashLoop")
    assert "restart #3" in r.message
    assert r.conditions[0].reason == "CrashLoop"


def test_expired_sandbox_shows_when_it_expired_and_no_countdown():
    loaded = syn.loaded_spec("web", SPECS, ttl=60)
    gone = Lifetime(syn_hash(loaded), NOW - 100, NOW - 40, NOW - 39)
    r = row(snapshot([loaded], lifetimes={"web": gone}), "web")
    assert (r.state, r.tone, r.reason) == ("expired", "gone", "TTLExpired")
    assert r.expired_at == NOW - 39 and r.expires_at is None and r.ttl_left_seconds is None


def test_expiring_now_is_expired_with_the_destroy_pending():
    loaded, have = running("web", ttl=60)
    life = Lifetime(syn_hash(loaded), NOW - 100, NOW - 1)
    r = row(snapshot([loaded], [have], lifetimes={"web": life}, ready={"web"}), "web")
    assert r.state == "expired"
    assert r.pending is not None and r.pending.action == "destroy" and "ttl expired" in r.pending.cause


def test_invalid_spec_keeps_the_sandbox_and_says_why():
    loaded, have = running("web")
    error = SpecError("web.yaml", 4, 3, "spec.port", "expected a port from 1 to 65535")
    r = row(snapshot([], [have], errors=[error], protected_names=frozenset({"web"})), "web")
    assert (r.state, r.reason) == ("invalid", "SpecInvalid")
    assert "web.yaml:4:3" in r.message


def test_container_without_spec_is_deleting():
    _, have = running("gone")
    r = row(snapshot([], [have]), "gone")
    assert (r.state, r.tone) == ("deleting", "gone")
    assert r.pending.action == "destroy"


def test_missing_image_is_stalled():
    loaded = syn.loaded_spec("web", SPECS, image="nowhere/nothing:1")
    r = row(snapshot([loaded]), "web")
    assert (r.state, r.reason) == ("stalled", "ImageMissing")
    assert "nowhere/nothing:1" in r.message


def test_overview_counts_plan_and_no_pools():
    snap = syn.world(50, now=NOW)
    view = overview(snap)
    assert len(view.sandboxes) == 50
    assert sum(view.counts.values()) == 50
    assert view.counts == state_counts(view.sandboxes)
    assert view.counts["ready"] == 30 and view.counts["pending"] == 5
    assert view.plan.add == 10 and "Plan: 10 to add" in view.plan.text
    assert view.pools == []
    assert [r.name for r in view.sandboxes] == sorted(r.name for r in view.sandboxes)


def test_overview_json_round_trips():
    view = overview(syn.world(5, now=NOW))
    again = type(view).model_validate_json(view.model_dump_json())
    assert again == view


def test_snapshot_time_drives_age_and_ttl():
    snap = syn.world(3, now=NOW)
    later = replace(snap, taken_at=NOW + 100)
    before, after = sandbox_rows(snap)[0], sandbox_rows(later)[0]
    assert after.age_seconds - before.age_seconds == 100
    assert before.ttl_left_seconds - after.ttl_left_seconds == 100


def syn_hash(loaded) -> str:
    from reconciler.lifetime import spec_hash

    return spec_hash(loaded)
