"""Pure parts of the control loop: crash-loop backoff, the watcher's change
filter, the next timed wake-up, and status conditions."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import backoff
from reconciler.backoff import RestartRecord, delay, on_crash, on_started, settled
from reconciler.controller import PassInput, PassResult, crash_message
from reconciler.loader import Desired
from reconciler.loop import _Timers, next_wake, relevant_change
from reconciler.observed import Observed
from reconciler.plan import Plan
from reconciler.settings import Settings
from reconciler.status import derive

T = 1_800_000_000.0


# --- backoff --------------------------------------------------------------------


def test_delay_doubles_from_one_second_to_a_five_minute_cap() -> None:
    assert [delay(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert delay(10_000) == 300
    assert delay(3, initial=0.5, cap=60) == 2.0


def test_consecutive_crashes_back_off_and_each_crash_is_counted_once() -> None:
    rec = on_started(None, "h1", T)  # created
    first = on_crash(rec, "h1", 3, False, "", T + 0.2)
    assert (first.restarts, first.retry_at) == (1, T + 1.2)
    assert on_crash(first, "h1", 3, False, "", T + 0.5) is first  # the same crash, seen again
    assert first.waiting(T + 1.0) and not first.waiting(T + 1.2)
    rec = on_started(first, "h1", T + 1.2)
    second = on_crash(rec, "h1", 3, False, "", T + 1.3)
    assert (second.restarts, second.retry_at) == (2, T + 3.3)
    third = on_crash(on_started(second, "h1", T + 3.3), "h1", 3, False, "", T + 3.4)
    assert third.restarts == 3 and third.retry_at == pytest.approx(T + 7.4)
    assert "restart #3 at " in crash_message(third, T + 3.4) and "(backoff 4s)" in crash_message(third, T + 3.4)


def test_staying_up_resets_the_backoff() -> None:
    rec = replace(on_started(None, "h1", T), restarts=7)
    assert settled(rec, T + backoff.RESET_AFTER)
    assert not settled(rec, T + backoff.RESET_AFTER - 1)
    assert on_crash(rec, "h1", 1, False, "", T + backoff.RESET_AFTER).restarts == 1
    assert on_crash(rec, "h1", 1, False, "", T + 5).restarts == 8


def test_a_new_version_of_the_sandbox_starts_counting_afresh() -> None:
    rec = replace(on_started(None, "h1", T), restarts=5)
    assert on_crash(rec, "h2", 1, False, "", T + 1).restarts == 1
    assert on_started(rec, "h2", T + 2) == RestartRecord("h2", 0, T + 2)


# --- the file watcher's filter ----------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "relevant"),
    [
        ("web.yaml", True),
        ("web.yml", True),
        ("", True),  # the directory itself
        ("notes.txt", False),
        (".web.yaml.swp", False),
        (".web.yaml", False),
        ("web.yaml~", False),
        ("web.yaml.tmp", False),
        ("#web.yaml#", False),
        ("calculator/app.py", True),  # an upload source
        ("calculator/.git/index", False),
        ("calculator/__pycache__/app.cpython-311.pyc", False),
        ("calculator/app.py.swp", False),
        ("calculator/.app.py.swx", False),
    ],
)
def test_relevant_change(rel: str, relevant: bool) -> None:
    specs = Path("/srv/specs")
    assert relevant_change(str(specs / rel) if rel else str(specs), specs) is relevant


def test_changes_outside_the_specs_dir_are_not_relevant() -> None:
    assert not relevant_change("/srv/other/web.yaml", Path("/srv/specs"))


# --- next wake-up -------------------------------------------------------------------


def _result(plan: Plan, restarts: dict | None = None) -> PassResult:
    return PassResult(Desired(specs={}), plan, (), Observed(instance="t"), (), restarts=restarts or {})


def test_next_wake_is_the_nearest_expiry_or_restart() -> None:
    from reconciler.lifetime import Lifetime

    plan = Plan(lifetimes={"a": Lifetime("h", T, T + 40), "b": Lifetime("h", T, T + 12), "c": Lifetime("h", T, None),
                           "gone": Lifetime("h", T - 100, T - 50, T - 50)})
    inp = PassInput(now=T)
    assert next_wake(_result(plan), inp, _Timers(), T + 2) == pytest.approx(10)
    held = replace(plan, held=(("c", "crash"),))
    rec = RestartRecord("h", 2, T, retry_at=T + 4)
    assert next_wake(_result(held, {"c": rec}), inp, _Timers(), T + 2) == pytest.approx(2)
    assert next_wake(_result(Plan()), inp, _Timers(), T) is None


# --- status conditions -----------------------------------------------------------------


def test_a_held_crash_is_stalled_crash_loop_with_its_logs() -> None:
    from reconciler.loader import LoadedSpec
    from reconciler.spec import SandboxSpec

    spec = SandboxSpec.model_validate({"apiVersion": "reconciler/v1", "kind": "Sandbox", "metadata": {"name": "c"},
                                       "spec": {"image": "x:1"}})
    desired = Desired(specs={"c": LoadedSpec(Path("/s/c.yaml"), "c.yaml", spec, ())})
    rec = RestartRecord("h", 2, T, retry_at=T + 2, exit_code=3, logs="boom", crashed_at=T)
    plan = Plan(held=(("c", crash_message(rec, T)),))
    result = PassResult(desired, plan, (), Observed(instance="t"), (), restarts={"c": rec}, crashed=("c",))
    statuses, events = derive(result, PassInput(now=T), {}, Settings())
    status = statuses["c"]
    assert status.summary == "CrashLoop"
    assert status.condition("Ready").status is False
    stalled = status.condition("Stalled")
    assert stalled.status and "exited with code 3" in stalled.message and stalled.message.endswith("boom")
    assert [e.kind for e in events] == ["crashloop"]


# --- command-line durations -----------------------------------------------------------


def test_resync_and_extend_durations() -> None:
    import argparse

    from reconciler.cli_loop import seconds_arg, since_arg

    assert seconds_arg("30s") == 30 and seconds_arg("1h30m") == 5400 and seconds_arg("0.5") == 0.5
    for bad in ("soon", "0", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds_arg(bad)
    assert since_arg("2026-01-01T10:00:00Z") == 1767261600.0
    assert abs(since_arg("1h") - (time.time() - 3600)) < 5
