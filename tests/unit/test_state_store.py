"""The SQLite state store and the watch lock (files in a tmp dir, no Docker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.backoff import RestartRecord
from reconciler.lifetime import Lifetime
from reconciler.lock import WatchLocked, hold_watch_lock, watch_running
from reconciler.settings import Settings
from reconciler.state import StateStore, open_store, read_lifetimes, store_path
from reconciler.status import Condition, LoopEvent, SandboxStatus

T = 1_800_000_000.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", instance="unit")


def test_the_store_lives_under_the_state_dir_in_wal_mode(settings: Settings) -> None:
    assert read_lifetimes(settings) == {}  # reading creates nothing
    assert not store_path(settings).exists()
    with open_store(settings) as store:
        mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert store_path(settings) == settings.state_dir / "unit.db"


def test_round_trip_of_every_record(settings: Settings) -> None:
    life = Lifetime("h", T, T + 60)
    rec = RestartRecord("c", 2, T, T + 2, 3, True, "boom", T + 1)
    cond = tuple(Condition(k, k == "Stalled", "CrashLoop", "m", T) for k in ("Ready", "Reconciling", "Stalled"))
    status = SandboxStatus("web", cond, "c", "http://x.localhost:8080")
    with open_store(settings) as store:
        store.save(lifetimes=({"web": life}, {}), restarts=({"web": rec}, {}), statuses=({"web": status}, {}),
                   events=[LoopEvent("created", "web", "new sandbox", None, T)])
    with open_store(settings) as store:
        assert store.lifetimes() == {"web": life}
        assert store.restarts() == {"web": rec}
        assert store.statuses()["web"].same_as(status)
        assert store.events() == [LoopEvent("created", "web", "new sandbox", None, T)]
        store.save(lifetimes=({}, {"web": life}), restarts=({}, {"web": rec}), statuses=({}, {"web": status}))
        assert store.lifetimes() == {} and store.restarts() == {} and store.statuses() == {}


def test_a_pass_never_overwrites_an_extend_it_did_not_see(settings: Settings) -> None:
    before = Lifetime("h", T, T + 60)
    with open_store(settings) as store:
        store.save(lifetimes=({"web": before}, {}))
        read_by_pass = store.lifetimes()
        extended = Lifetime("h", T, T + 600)
        assert store.replace_lifetime("web", before, extended)  # another process extends
        # The pass now writes what it computed from its stale read: it loses.
        store.save(lifetimes=({"web": Lifetime("h", T, T + 60, T + 61)}, read_by_pass))
        assert store.lifetimes()["web"] == extended
        assert not store.replace_lifetime("web", before, Lifetime("h", T, T + 1))


def test_events_since_and_by_name(settings: Settings) -> None:
    with open_store(settings) as store:
        store.add_events([LoopEvent("created", "a", "x", None, T), LoopEvent("expired", "b", "y", None, T + 10),
                          LoopEvent("ready", "a", "z", "http://a", T + 20)])
        assert [e.kind for e in store.events(since=T + 5)] == ["expired", "ready"]
        assert [e.kind for e in store.events(name="a")] == ["created", "ready"]


def test_another_process_reads_while_this_one_writes(settings: Settings) -> None:
    with open_store(settings) as store:
        store.add_events([LoopEvent("created", "a", "x", None, T)])
        code = (
            "import sys; from pathlib import Path; from reconciler.state import StateStore;"
            f"s = StateStore(Path({str(store_path(settings))!r})); print(len(s.events()))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "1"


def test_nothing_is_written_when_nothing_changed(settings: Settings) -> None:
    life = Lifetime("h", T, T + 60)
    with open_store(settings) as store:
        store.save(lifetimes=({"web": life}, {}))
        changes = store._db.total_changes
        store.save(lifetimes=({"web": life}, {"web": life}), restarts=({}, {}), statuses=({}, {}))
        assert store._db.total_changes == changes


def test_the_watch_lock_admits_one_watch(settings: Settings) -> None:
    assert not watch_running(settings)
    with hold_watch_lock(settings):
        assert watch_running(settings)
        with pytest.raises(WatchLocked, match='already running for instance "unit"'):
            with hold_watch_lock(settings):
                pass
    assert not watch_running(settings)
    with hold_watch_lock(settings):  # free again
        pass


def test_a_newer_schema_is_refused(settings: Settings) -> None:
    from reconciler.errors import UserError

    with open_store(settings) as store:
        store._db.execute("PRAGMA user_version=99")
    with pytest.raises(UserError, match="newer reconciler"):
        StateStore(store_path(settings))
