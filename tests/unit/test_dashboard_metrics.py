"""``/metrics`` content: parsed back with prometheus_client's own parser."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconciler.controller import PassResult
from reconciler.dashboard import synthetic as syn
from reconciler.execute import ChangeResult
from reconciler.loader import Desired
from reconciler.metrics import Metrics, spec_ready_latencies
from reconciler.observed import Observed
from reconciler.plan import Change, Plan
from reconciler.container_config import desired_sandbox
from reconciler.traefik import Route

INSTANCE = "unit"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by (name, sorted labels)."""
    text = metrics.exposition().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def pass_result(tmp_path: Path, created: list[str], routed: list[str], failed: tuple[str, ...] = ()) -> PassResult:
    results = []
    routes = []
    for name in created:
        loaded = syn.loaded_spec(name, tmp_path)
        loaded.path.write_text("spec")  # its mtime is the spec write
        want = desired_sandbox(loaded, INSTANCE, syn.IMAGE_ID)
        ok = name not in failed
        results.append(ChangeResult(Change("create", name, "new sandbox", want), ok, None if ok else "boom"))
        if name in routed:
            routes.append(Route(f"rc-{INSTANCE}-{name}", f"{want.hostname}.localhost", "http://10.0.0.2:8080"))
    return PassResult(Desired(specs={}), Plan(), tuple(results), Observed(instance=INSTANCE), tuple(routes))


def test_exposition_parses_and_declares_every_metric():
    metrics = Metrics(states=lambda: {"ready": 3, "stalled": 1})
    names = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    assert {
        "reconciler_sandboxes", "reconciler_reconcile_pass_duration_seconds", "reconciler_apply_errors",
        "reconciler_spec_to_ready_seconds", "reconciler_ttl_expirations", "reconciler_restarts",
        "reconciler_pool_size", "reconciler_traefik_renders", "reconciler_changes",
    } <= names
    assert value(metrics, "reconciler_sandboxes", state="ready") == 3
    assert value(metrics, "reconciler_sandboxes", state="stalled") == 1


def test_sandbox_gauge_is_read_at_scrape_time():
    counts = {"ready": 1}
    metrics = Metrics(states=lambda: counts)
    assert value(metrics, "reconciler_sandboxes", state="ready") == 1
    counts["ready"] = 7
    assert value(metrics, "reconciler_sandboxes", state="ready") == 7


def test_pool_sizes_come_from_their_callback():
    metrics = Metrics(pools=lambda: {"py": {"ready": 2, "total": 3}})
    assert value(metrics, "reconciler_pool_size", pool="py", state="ready") == 2
    assert value(metrics, "reconciler_pool_size", pool="py", state="total") == 3
    assert not [k for k in samples(Metrics()) if k[0] == "reconciler_pool_size"]


def test_events_move_the_counters():
    metrics = Metrics()
    for kind, name, message in [
        ("created", "a", "new sandbox"), ("created", "b", "new sandbox"), ("expired", "a", "ttl expired"),
        ("restarted", "b", "restart #1"), ("error", "c", "create failed: no image"), ("ready", "b", "ok"),
        ("destroyed", None, "orphan network rc-x"), ("crashloop", "b", "exited with code 1"),
    ]:
        metrics.record_event(kind, name, message)
    assert value(metrics, "reconciler_changes_total", action="create") == 2
    assert value(metrics, "reconciler_changes_total", action="destroy") == 1  # the expiry, not the network
    assert value(metrics, "reconciler_changes_total", action="start") == 1
    assert value(metrics, "reconciler_ttl_expirations_total") == 1
    assert value(metrics, "reconciler_restarts_total") == 1
    assert value(metrics, "reconciler_crashloops_total") == 1
    assert value(metrics, "reconciler_apply_errors_total", action="create") == 1


def test_pass_duration_renders_and_spec_to_ready(tmp_path):
    clock = [1_000.0]
    metrics = Metrics(clock=lambda: clock[0])
    result = pass_result(tmp_path, ["a", "b"], routed=["a"])
    os.utime(tmp_path / "a.yaml", (1_001.0, 1_001.0))
    os.utime(tmp_path / "b.yaml", (1_001.0, 1_001.0))
    clock[0] = 1_003.5
    metrics.record_pass(result, seconds=0.75)
    assert value(metrics, "reconciler_reconcile_pass_duration_seconds_count") == 1
    assert value(metrics, "reconciler_reconcile_pass_duration_seconds_sum") == 0.75
    assert value(metrics, "reconciler_reconcile_pass_duration_seconds_bucket", le="1.0") == 1
    assert value(metrics, "reconciler_reconcile_passes_total", result="ok") == 1
    # Only the routed sandbox counts, from its spec's write (1001) to now (1003.5).
    assert value(metrics, "reconciler_spec_to_ready_seconds_count") == 1
    assert value(metrics, "reconciler_spec_to_ready_seconds_sum") == 2.5
    assert value(metrics, "reconciler_traefik_renders_total", result="changed") == 1
    clock[0] = 1_010.0
    metrics.record_pass(pass_result(tmp_path, [], routed=[]), seconds=0.1)
    metrics.record_pass(pass_result(tmp_path, [], routed=[]), seconds=0.1)
    assert value(metrics, "reconciler_traefik_renders_total", result="changed") == 2
    assert value(metrics, "reconciler_traefik_renders_total", result="unchanged") == 1
    assert value(metrics, "reconciler_reconcile_pass_duration_seconds_count") == 3


def test_old_specs_recreated_by_drift_repair_are_no_spec_to_ready_sample(tmp_path):
    result = pass_result(tmp_path, ["a"], routed=["a"])
    os.utime(tmp_path / "a.yaml", (500.0, 500.0))
    # Written before the previous pass began: this create repairs drift, it is not a new spec.
    assert spec_ready_latencies(result, since=900.0, now=1_000.0) == []
    assert spec_ready_latencies(result, since=400.0, now=1_000.0) == [500.0]


def test_failed_change_gives_no_latency(tmp_path):
    result = pass_result(tmp_path, ["a"], routed=["a"], failed=("a",))
    assert spec_ready_latencies(result, since=0.0, now=2e9) == []


def test_two_metrics_share_nothing():
    one, two = Metrics(), Metrics()
    one.record_event("expired", "a")
    assert value(one, "reconciler_ttl_expirations_total") == 1
    assert value(two, "reconciler_ttl_expirations_total") == 0


def test_a_pass_that_raised_counts_as_an_error_and_a_refused_render():
    metrics = Metrics()
    metrics.record_event("error", None, "reconcile pass failed: RenderError: host 'x' is not a DNS name")
    metrics.record_event("error", None, "reconcile pass failed: cannot list Docker objects")
    assert value(metrics, "reconciler_reconcile_passes_total", result="error") == 2
    assert value(metrics, "reconciler_traefik_renders_total", result="error") == 1
