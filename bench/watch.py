"""The rows that need ``reconcile watch`` running: spec → routable, drift repair, idle CPU."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .report import Row
from .runner import Bench
from .stats import fmt_summary, summarize
from .workload import INSTANCE_LABEL, Workspace, names, reconcile_command

CLK_TCK = os.sysconf("SC_CLK_TCK")


def watch_available() -> bool:
    """True once ``reconcile watch`` exists (the watch loop is built by another issue)."""
    proc = subprocess.run([*reconcile_command(), "watch", "--help"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    return proc.returncode == 0


class WatchProcess:
    """A ``reconcile watch`` child process and what /proc says about it."""

    def __init__(self, ws: Workspace, log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([*reconcile_command(), "watch"], env={**os.environ, **ws.env()},
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process, all threads (``/proc/PID/stat`` fields 14 and 15)."""
        raw = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = raw[raw.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB: resident now, and the peak."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"reconcile watch exited with {self.proc.returncode}:\n{tail}")

    def wait_settled(self, quiet: float = 1.5, timeout: float = 120.0) -> None:
        """Until the process has used under 3% of a core for ``quiet`` seconds (its passes are done)."""
        deadline = time.monotonic() + timeout
        last, since = self.cpu_seconds(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            self.alive()
            now_cpu, now = self.cpu_seconds(), time.monotonic()
            if now_cpu - last > 0.03 * (now - since):
                last, since = now_cpu, now
            elif now - since >= quiet:
                return
        raise RuntimeError("reconcile watch never went quiet")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def watch_process(b: Bench, ws: Workspace) -> Iterator[WatchProcess]:
    watch = WatchProcess(ws, ws.root / "watch.log")
    try:
        yield watch
    finally:
        watch.stop()


def _host(ws: Workspace, name: str) -> str:
    from reconciler.labels import default_hostname

    return f"{default_hostname(ws.instance, name)}.localhost"


def watch_rows(b: Bench) -> list[Row]:
    """One watch, one Traefik: spec → routable runs, then drift repairs on those sandboxes, then idle."""
    if not watch_available():
        raise RuntimeError("`reconcile watch` is not available in this build")
    ws = b.workspace()
    rows = []
    with b.traefik(ws) as traefik, watch_process(b, ws) as watch:
        watch.wait_settled()
        routable, stages = [], []
        for name in names(b.sizes.routable_runs, "r"):
            wall, started = time.time(), time.monotonic()
            ws.write_spec(name)
            routable.append(traefik.wait_status(_host(ws, name), 200, timeout=30) - started)
            stages.append(_stages(b, ws, name, wall, network=True))
            stages[-1]["first 200"] = routable[-1]
            watch.alive()
            time.sleep(0.3)  # let the loop and Traefik's throttle window go quiet between runs
        s = summarize(routable)
        rows.append(Row("spec-to-routable", "spec → routable", "watch running; write one spec (atomic rename); "
                        "time to the first 200 through the real Traefik", fmt_summary(s),
                        "median ≤ 350 ms, p95 ≤ 700 ms", s.median <= 0.35 and s.p95 <= 0.70,
                        detail="medians after the write: " + _stage_text(stages),
                        data={"samples": routable, "stages": stages}))
        drift, removal, stages = [], [], []
        victims = names(b.sizes.routable_runs, "r")
        for k in range(b.sizes.drift_runs):
            name = victims[k % len(victims)]
            time.sleep(0.5)
            flt = {"label": [f"{INSTANCE_LABEL}={ws.instance}", f"reconciler.sandbox={name}"]}
            (container,) = b.api.containers(filters=flt)  # type: ignore[attr-defined]
            started = time.monotonic()
            b.api.remove_container(container["Id"], force=True)  # type: ignore[attr-defined]
            removed, wall = time.monotonic(), time.time()
            removal.append(removed - started)
            drift.append(traefik.wait_status(_host(ws, name), 200, timeout=30) - removed)
            stages.append(_stages(b, ws, name, wall, network=False))
            stages[-1]["first 200"] = drift[-1]
            watch.alive()
        s = summarize(drift)
        rows.append(Row("drift-repair", "drift repair", "`docker rm -f` of a routed sandbox (from the moment it "
                        "returns) → 200 again through Traefik", fmt_summary(s), "median ≤ 500 ms", s.median <= 0.5,
                        detail=(f"medians after `docker rm -f` returned: {_stage_text(stages)}; the removal "
                                f"itself took {fmt_summary(summarize(removal))}"),
                        data={"samples": drift, "removal": removal, "stages": stages}))
        rows.append(idle_row(b, ws, traefik, watch))
    ws.reconcile("destroy", "--all", "--volumes")
    return rows


def _docker_time(stamp: str) -> float:
    """Unix seconds of a Docker RFC 3339 timestamp with nanoseconds."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{frac or 0}")


def _stages(b: Bench, ws: Workspace, name: str, since: float, network: bool) -> dict[str, float]:
    """When the pieces of a sandbox appeared, in seconds after ``since`` (Docker's and the file's clocks)."""
    api = b.api
    flt = {"label": [f"{INSTANCE_LABEL}={ws.instance}", f"reconciler.sandbox={name}"]}
    (container,) = api.containers(filters=flt)  # type: ignore[attr-defined]
    info = api.inspect_container(container["Id"])  # type: ignore[attr-defined]
    out = {}
    if network:
        net = api.inspect_network(f"rc-{ws.instance}-{name}")  # type: ignore[attr-defined]
        out["network created"] = _docker_time(net["Created"]) - since
    out["container created"] = _docker_time(info["Created"]) - since
    out["started"] = _docker_time(info["State"]["StartedAt"]) - since
    from reconciler.traefik import dynamic_filename

    out["Traefik file written"] = (ws.traefik_dir / dynamic_filename(ws.instance)).stat().st_mtime - since
    return out


def _stage_text(stages: list[dict[str, float]]) -> str:
    keys = list(stages[0])
    return ", ".join(f"{k} +{statistics.median(st[k] for st in stages) * 1000:.0f} ms" for k in keys)


def idle_row(b: Bench, ws: Workspace, traefik, watch: WatchProcess) -> Row:  # noqa: ANN001
    n = b.sizes.idle_sandboxes
    have = b.sizes.routable_runs
    for name in names(max(0, n - have), "i"):
        ws.write_spec(name)
    deadline = time.monotonic() + 300
    while len(traefik.enabled_routers()) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"watch did not route {n} sandboxes")
        watch.alive()
        time.sleep(0.5)
    watch.wait_settled(quiet=2.0)
    seconds = b.sizes.idle_seconds
    cpu0, t0 = watch.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = watch.cpu_seconds(), time.monotonic()
    watch.alive()
    share = (cpu1 - cpu0) / (t1 - t0) * 100
    rss, hwm = watch.memory_kib()
    return Row("idle-cpu", "idle", f"CPU of `reconcile watch` over {seconds:.0f} s with {n} sandboxes, nothing "
               "changing (resync ticks included)", f"{share:.2f}% of a core", "< 1% of a core", share < 1.0,
               detail=f"idle watch with {n} sandboxes: {cpu1 - cpu0:.2f} s CPU in {t1 - t0:.0f} s; "
               f"RSS {rss / 1024:.0f} MiB",
               data={"cpu_seconds": cpu1 - cpu0, "wall_seconds": t1 - t0, "rss_kib": rss})
