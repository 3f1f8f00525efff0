"""Summaries of timing samples, and how figures are written in the report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Summary:
    n: int
    min: float
    median: float
    p95: float
    max: float

    def to_json(self) -> dict[str, float]:
        return {"n": self.n, "min": self.min, "median": self.median, "p95": self.p95, "max": self.max}


def summarize(samples: Sequence[float]) -> Summary:
    """Min, median, p95 (linear interpolation between closest ranks) and max."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    n = len(ordered)
    rank = 0.95 * (n - 1)
    low = int(rank)
    high = min(low + 1, n - 1)
    p95 = ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
    return Summary(n, ordered[0], statistics.median(ordered), p95, ordered[-1])


def ratios(ours: Sequence[float], theirs: Sequence[float]) -> Summary:
    """Pair by pair: run i of ours against run i of theirs, measured back to back."""
    if len(ours) != len(theirs):
        raise ValueError("ratios need pairs")
    return summarize([a / b for a, b in zip(ours, theirs) if b > 0])


def fmt_time(seconds: float) -> str:
    """Milliseconds below 10 s, seconds above: the precision the noise allows."""
    if seconds < 10:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
    return f"{seconds:.1f} s"


def fmt_summary(s: Summary, unit: str = "time") -> str:
    """``median 212 ms · p95 340 ms (n=20, 180–360 ms)``; min/median/max when n < 5."""
    f = fmt_time if unit == "time" else (lambda v: f"{v:.2f}{unit}")
    if s.n == 1:
        return f"{f(s.median)} (n=1)"
    if s.n < 5:
        return f"median {f(s.median)} (n={s.n}, min {f(s.min)}, max {f(s.max)})"
    return f"median {f(s.median)} · p95 {f(s.p95)} (n={s.n}, min {f(s.min)}, max {f(s.max)})"


def fmt_ratio(s: Summary) -> str:
    if s.n < 2:
        return f"{s.median:.2f}×"
    return f"{s.median:.2f}× ({s.min:.2f}–{s.max:.2f})"
