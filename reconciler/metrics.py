"""Prometheus metrics of one reconciler process, on a registry of its own.

Three feeds:
- ``record_event``: the events log (created, destroyed, expired, restarted,
  error ...). The dashboard tails the state store's log, so these counters
  move whether the loop runs in this process (``up``) or another (``watch``
  beside ``serve``).
- ``record_pass``: one finished reconcile pass (its duration, the routes it
  rendered, spec → ready latencies); only the process running the loop has it.
- callbacks read at scrape time for what describes the world now (sandboxes by
  state, pool sizes), so those gauges are never stale.
Nothing here is global: two ``Metrics`` never share a sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .controller import PassResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
READY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)

# Events of the log that are changes carried out, and the action each counts as.
EVENT_ACTIONS = {"created": "create", "recreated": "recreate", "restarted": "start",
                 "destroyed": "destroy", "expired": "destroy"}
ACTIONS = ("create", "recreate", "start", "destroy")

StateCounts = Callable[[], Mapping[str, int]]
PoolSizes = Callable[[], Mapping[str, Mapping[str, int]]]  # pool -> {"idle": n, "claimed": m}


class _ScrapeTimeGauges(Collector):
    """Gauges computed when Prometheus scrapes: sandboxes by state, pool sizes."""

    def __init__(self, states: StateCounts | None, pools: PoolSizes | None) -> None:
        self.states = states
        self.pools = pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            "reconciler_sandboxes", "Sandboxes of this instance by state", labels=["state"]
        )
        for state, count in sorted((self.states() if self.states else {}).items()):
            by_state.add_metric([state], count)
        yield by_state
        pool_size = GaugeMetricFamily(
            "reconciler_pool_size", "Members of each warm pool by state", labels=["pool", "state"]
        )
        for pool, counts in sorted((self.pools() if self.pools else {}).items()):
            for state, count in sorted(counts.items()):
                pool_size.add_metric([pool, state], count)
        yield pool_size

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Declared without calling the callbacks: registering must not observe Docker.
        return [
            GaugeMetricFamily("reconciler_sandboxes", "Sandboxes of this instance by state", labels=["state"]),
            GaugeMetricFamily("reconciler_pool_size", "Members of each warm pool by state", labels=["pool", "state"]),
        ]


class Metrics:
    """The instruments of one process. ``states``/``pools`` are read at scrape time."""

    def __init__(
        self,
        states: StateCounts | None = None,
        pools: PoolSizes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.started = clock()
        self._last_pass_started: float | None = None
        self.scrape_gauges = _ScrapeTimeGauges(states, pools)
        self.registry.register(self.scrape_gauges)
        r = self.registry
        self.pass_seconds = Histogram(
            "reconciler_reconcile_pass_duration_seconds",
            "Wall time of one reconcile pass (load, observe, plan, execute, wait ready, route)",
            buckets=PASS_BUCKETS, registry=r,
        )
        self.passes = Counter(
            "reconciler_reconcile_passes",
            "Reconcile passes: ok; problems (a change failed or a spec is invalid); error (the pass raised)",
            ["result"], registry=r,
        )
        self.changes = Counter(
            "reconciler_changes", "Sandbox changes carried out, by action (expiries count as destroy)",
            ["action"], registry=r,
        )
        self.apply_errors = Counter(
            "reconciler_apply_errors", "Changes that failed, by action", ["action"], registry=r
        )
        self.spec_ready_seconds = Histogram(
            "reconciler_spec_to_ready_seconds",
            "From a spec file's write to its sandbox answering and being routed",
            buckets=READY_BUCKETS, registry=r,
        )
        self.ttl_expirations = Counter(
            "reconciler_ttl_expirations", "Sandboxes destroyed because their TTL passed", registry=r
        )
        self.restarts = Counter(
            "reconciler_restarts", "Sandboxes started again after their container exited", registry=r
        )
        self.crashloops = Counter(
            "reconciler_crashloops", "Crashes noticed (the restart then waits out a backoff)", registry=r
        )
        self.traefik_renders = Counter(
            "reconciler_traefik_renders",
            "Traefik dynamic config renders (changed: file rewritten; unchanged; error: refused)",
            ["result"], registry=r,
        )
        self._last_routes: frozenset[tuple[str, str, str]] | None = None
        for action in ACTIONS:
            self.changes.labels(action)
            self.apply_errors.labels(action)
        for result in ("ok", "problems", "error"):
            self.passes.labels(result)
        for result in ("changed", "unchanged", "error"):
            self.traefik_renders.labels(result)

    # --- feeding ---------------------------------------------------------------

    def record_pass(self, result: PassResult, seconds: float, started: float | None = None) -> None:
        """One finished pass: its duration, outcome, Traefik render and spec → ready latencies.
        (Its changes and errors are counted from the events log: see ``record_event``.)

        ``started``: wall-clock start of the pass (default: now - seconds).
        """
        now = self.clock()
        started = now - seconds if started is None else started
        self.pass_seconds.observe(max(0.0, seconds))
        self.passes.labels("ok" if result.ok else "problems").inc()
        routes = frozenset((r.name, r.host, r.url) for r in result.routes)
        self.record_render("unchanged" if routes == self._last_routes else "changed")
        self._last_routes = routes
        for latency in spec_ready_latencies(result, self._seen_since(), now):
            self.spec_ready_seconds.observe(latency)
        self._last_pass_started = started

    def record_event(self, kind: str, name: str | None, message: str = "") -> None:
        """One entry of the events log (``status.LoopEvent``: kind, name, message)."""
        if name is None:
            # The loop's own errors: a pass that raised (logged once per outage).
            if kind == "error" and message.startswith("reconcile pass failed"):
                self.passes.labels("error").inc()
                if "RenderError" in message:
                    self.traefik_renders.labels("error").inc()
            return  # orphan networks and volumes are not sandboxes
        if kind in EVENT_ACTIONS:
            self.changes.labels(EVENT_ACTIONS[kind]).inc()
        if kind == "expired":
            self.ttl_expirations.inc()
        elif kind == "restarted":
            self.restarts.inc()
        elif kind == "crashloop":
            self.crashloops.inc()
        elif kind == "error":
            # "create failed: ..." (status._change_events)
            action = message.split(" ", 1)[0]
            self.apply_errors.labels(action if action in ACTIONS else "other").inc()

    def _seen_since(self) -> float:
        # A spec written after the previous pass began is one this pass is the
        # first to act on; older ones (drift repairs, restarts) are not a
        # spec -> ready latency and would only skew the histogram.
        return self._last_pass_started if self._last_pass_started is not None else self.started

    def record_render(self, result: str) -> None:
        """A Traefik render: ``changed``, ``unchanged`` or ``error``."""
        self.traefik_renders.labels(result).inc()

    def record_expiration(self, count: int = 1) -> None:
        self.ttl_expirations.inc(count)

    def record_restart(self, count: int = 1) -> None:
        self.restarts.inc(count)

    # --- reading -----------------------------------------------------------------

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric here."""
        return generate_latest(self.registry)


def spec_ready_latencies(result: PassResult, since: float, now: float) -> list[float]:
    """Seconds from spec write to routed, for each sandbox this pass created or
    recreated from a spec file written at or after ``since``."""
    routed_hosts = {route.host.split(".", 1)[0] for route in result.routes}
    out = []
    for change_result in result.results:
        change = change_result.change
        if not change_result.ok or change.action not in ("create", "recreate") or change.desired is None:
            continue
        if change.desired.hostname not in routed_hosts:
            continue
        try:
            written = change.desired.loaded.path.stat().st_mtime
        except OSError:
            continue  # the file went away meanwhile: no latency to speak of
        if written >= since:
            out.append(max(0.0, now - written))
    return out
