"""The warm-pool row (issue 7): spec → routable when the sandbox claims a member of a
warm pool, with ``reconcile watch`` running and the pool refilled between runs."""

from __future__ import annotations

import os
import statistics
import time

from .report import Row
from .runner import Bench
from .stats import fmt_summary, summarize
from .watch import _host, watch_available, watch_process
from .workload import IMAGE, INSTANCE_LABEL, Workspace, names, spec_text

POOL = "warm"
POOL_SIZE = 5


def pool_text(size: int = POOL_SIZE) -> str:
    """A pool the workload's spec matches: same image, default limits, no env."""
    return (f"apiVersion: reconciler/v1\nkind: Pool\nmetadata: {{name: {POOL}}}\n"
            f"spec:\n  image: {IMAGE}\n  size: {size}\n")


def write_pooled_spec(ws: Workspace, name: str) -> None:
    """The workload's spec with ``pool:``, saved as an agent saves it (temp name, then rename)."""
    target, tmp = ws.specs / f"{name}.yaml", ws.specs / f".{name}.yaml.tmp"
    tmp.write_text(spec_text(name) + f"  pool: {POOL}\n")
    os.replace(tmp, target)


def idle_members(b: Bench, ws: Workspace) -> list[dict]:
    labels = [f"{INSTANCE_LABEL}={ws.instance}", "reconciler.kind=pool-member", f"reconciler.pool={POOL}"]
    found = b.api.containers(filters={"label": labels, "status": "running"})  # type: ignore[attr-defined]
    return [c for c in found if c["Names"][0].lstrip("/").startswith(f"rc-{ws.instance}.")]  # not claimed


def wait_full(b: Bench, ws: Workspace, watch, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while len(idle_members(b, ws)) < POOL_SIZE:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool never reached {POOL_SIZE} idle members")
        watch.alive()
        time.sleep(0.05)


def pool_rows(b: Bench) -> list[Row]:
    """Runs of: a full pool, the loop quiet, write one pooled spec, time to the first 200 through Traefik."""
    from reconciler.traefik import dynamic_filename

    if not watch_available():
        raise RuntimeError("`reconcile watch` is not available in this build")
    ws = b.workspace("pool")
    (ws.specs / f"{POOL}.yaml").write_text(pool_text())
    samples, began, written, claimed = [], [], [], 0
    with b.traefik(ws) as traefik, watch_process(b, ws) as watch:
        for name in names(b.sizes.routable_runs, "p"):
            wait_full(b, ws, watch)
            watch.wait_settled(quiet=1.0)  # the refill and its passes are over: measure the claim alone
            wall, started = time.time(), time.monotonic()
            write_pooled_spec(ws, name)
            samples.append(traefik.wait_status(_host(ws, name), 200, timeout=30) - started)
            flt = {"label": [f"{INSTANCE_LABEL}={ws.instance}"], "name": f"^/rc-{ws.instance}-{name}$"}
            (box,) = b.api.containers(filters=flt)  # type: ignore[attr-defined]
            claimed += box["Labels"].get("reconciler.kind") == "pool-member"
            written.append((ws.traefik_dir / dynamic_filename(ws.instance)).stat().st_mtime - wall)
            began.append(_pass_began(ws, name) - wall)
            watch.alive()
    ws.reconcile("destroy", "--all")
    s = summarize(samples)
    runs = len(samples)
    cold = "" if claimed == runs else f" (the other {runs - claimed} found no member and were created cold)"
    detail = (f"pool of {POOL_SIZE}, refilled and the loop quiet before each run; {claimed} of {runs} runs "
              f"claimed a member{cold}. Medians after the write: the pass began "
              f"{_ms(began)} (the watch's debounce), Traefik file written {_ms(written)}, first 200 {_ms(samples)}. "
              "Compare the cold figure, spec → routable, measured in the same suite run.")
    return [Row("spec-to-routable-pool", "spec → routable from pool",
                f"watch running, pool of {POOL_SIZE}; write one spec with `pool:` (atomic rename); time to the "
                "first 200 through the real Traefik", fmt_summary(s), "median ≤ 150 ms, p95 ≤ 300 ms",
                s.median <= 0.15 and s.p95 <= 0.30 and claimed == runs, detail=detail,
                data={"samples": samples, "pass_began": began, "traefik_written": written, "claimed": claimed})]


def _ms(values: list[float]) -> str:
    return f"+{statistics.median(values) * 1000:.0f} ms"


def _pass_began(ws: Workspace, name: str) -> float:
    """When the pass that created ``name`` began (its "created" event carries the pass's time)."""
    from reconciler.state import open_store

    with open_store(ws.settings()) as store:
        created = [e for e in store.events(name=name) if e.kind == "created"]
    if not created:
        raise RuntimeError(f"no created event for {name}")
    return created[-1].time
