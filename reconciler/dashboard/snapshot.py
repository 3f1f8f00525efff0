"""Taking snapshots for the dashboard: load, observe, plan, probe, sample usage.

One snapshot serves every request for ``max_age`` seconds, however many tabs
poll: the cost of a refresh (one observe, one plan, one probe sweep, one read
of the cgroup files) is paid once per interval, not once per client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..controller import Context, make_plan
from ..probe import ready_set
from .readmodel import PoolCounts, Snapshot
from .store import StoreReader
from .usage import UsageSampler


class SnapshotSource:
    """Hands out the latest :class:`Snapshot`, refreshing it when older than ``max_age``."""

    def __init__(
        self,
        ctx: Context,
        store: StoreReader,
        usage: UsageSampler | None = None,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.time,
        pools: Callable[[], tuple[PoolCounts, ...]] = tuple,
    ) -> None:
        # A context of our own (same settings and engine, own parse cache): the
        # loop's cache is not ours to mutate from another thread.
        self.ctx = Context(settings=ctx.settings, engine=ctx.engine)
        self.store = store
        self.usage = usage or UsageSampler()
        self.max_age = max_age
        self.clock = clock
        self.pools = pools
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._monotonic_at = 0.0

    def get(self) -> Snapshot:
        """The latest snapshot, at most ``max_age`` seconds old."""
        with self._lock:
            if self._latest is not None and time.monotonic() - self._monotonic_at < self.max_age:
                return self._latest
            self._latest = self._take()
            self._monotonic_at = time.monotonic()
            return self._latest

    def invalidate(self) -> None:
        """Forget the cached snapshot: the next ``get`` observes afresh (after an action)."""
        with self._lock:
            self._latest = None

    def _take(self) -> Snapshot:
        desired, observed, plan = make_plan(self.ctx)
        store = self.store.view()
        # Sandboxes the loop already reports Ready need no probe of ours.
        reported = {
            name for name, conds in store.conditions.items()
            if any(c.type == "Ready" and c.status for c in conds)
        }
        ready = ready_set(sb for sb in observed.sandboxes.values() if sb.name not in reported)
        running = [sb.container_id for sb in observed.sandboxes.values() if sb.running]
        usage = self.usage.sweep(running)
        return Snapshot(
            taken_at=self.clock(),
            settings=self.ctx.settings,
            desired=desired,
            observed=observed,
            plan=plan,
            ready=frozenset(ready),
            usage=usage,
            usage_source="cgroup" if self.usage.available else "unavailable",
            store=store,
            pools=self.pools(),
        )
