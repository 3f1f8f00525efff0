"""Crash-loop bookkeeping: when a sandbox that exited by itself may be restarted.
Pure: ``now`` is a parameter.

Like Kubernetes' CrashLoopBackOff: 1 s before the first restart, doubling to a
5 min cap; a sandbox that stays up ``RESET_AFTER`` seconds starts from 1 s again.
A container stopped or killed from outside is not a crash: it is restarted at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

INITIAL_DELAY = 1.0
MAX_DELAY = 300.0
RESET_AFTER = 60.0


def delay(restarts: int, initial: float = INITIAL_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before restart number ``restarts`` (1-based): 1, 2, 4, ... cap."""
    if restarts <= 1:
        return min(initial, cap)
    return min(cap, initial * 2.0 ** min(restarts - 1, 64))


@dataclass(frozen=True)
class RestartRecord:
    """One sandbox's crash history, kept in the state store across restarts of the loop."""

    config_hash: str  # crashes of another version of the sandbox do not count
    restarts: int  # consecutive crash restarts so far (the pending one included)
    started_at: float  # when the reconciler last started it
    retry_at: float | None = None  # a crash is pending: restart not before this
    exit_code: int | None = None
    oom: bool = False
    logs: str = ""  # the last log lines at the crash
    crashed_at: float | None = None

    def waiting(self, now: float) -> bool:
        return self.retry_at is not None and now < self.retry_at


def on_crash(
    prev: RestartRecord | None,
    config_hash: str,
    exit_code: int | None,
    oom: bool,
    logs: str,
    now: float,
) -> RestartRecord:
    """A crash was noticed: schedule the next restart."""
    if prev is not None and prev.retry_at is not None and prev.config_hash == config_hash:
        return prev  # this crash is already scheduled
    fresh = prev is None or prev.config_hash != config_hash or now - prev.started_at >= RESET_AFTER
    count = 1 if fresh else prev.restarts + 1  # type: ignore[union-attr]
    started = prev.started_at if prev is not None else now
    return RestartRecord(config_hash, count, started, now + delay(count), exit_code, oom, logs, now)


def on_started(prev: RestartRecord | None, config_hash: str, now: float) -> RestartRecord:
    """The reconciler (re)started the sandbox: the pending restart is done."""
    if prev is None or prev.config_hash != config_hash:
        return RestartRecord(config_hash, 0, now)
    return replace(prev, started_at=now, retry_at=None)


def settled(prev: RestartRecord, now: float) -> bool:
    """True when the sandbox has stayed up long enough to forget its crashes."""
    return prev.retry_at is None and now - prev.started_at >= RESET_AFTER
