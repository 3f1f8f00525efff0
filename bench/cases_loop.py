"""In-process rows: the no-op pass of the loop, and the 300-sandbox scale case."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from .report import Row
from .runner import Bench, Traefik
from .stats import fmt_summary, fmt_time, summarize
from .watch import watch_available, watch_process
from .workload import IMAGE, Workspace, names

PASS_TARGETS_MS = (10, 50, 150)  # for the 20 / 300 / 1000


def _ctx(ws: Workspace, engine=None):  # noqa: ANN001, ANN202
    from reconciler.controller import Context
    from reconciler.docker_engine import DockerEngine

    return Context(settings=ws.settings(), engine=engine or DockerEngine(ws.instance))


def loop_pass(ctx, store):  # noqa: ANN001, ANN201 - Context, StateStore -> PassResult
    """One pass exactly as the watch loop runs it (``loop._one_pass`` without its event plumbing)."""
    from reconciler.controller import PassInput, record_pass, reconcile_pass
    from reconciler.loop import IN_PASS_WAIT

    inp = PassInput(now=time.time(), lifetimes=store.lifetimes(), restarts=store.restarts(), backoff=True,
                    wait=IN_PASS_WAIT)
    result = reconcile_pass(ctx, inp)
    record_pass(ctx, store, inp, result)
    return result


def timed_passes(ws: Workspace, n: int, runs: int, engine=None) -> list[float]:  # noqa: ANN001
    """``runs`` passes of the loop with nothing to do; the store stays open, as in ``watch``."""
    from reconciler.state import open_store

    ctx = _ctx(ws, engine)
    time.sleep(max(0.0, 1.1 - (time.time() - newest_mtime(ws.specs))))  # past the loader's racy window
    samples = []
    with open_store(ctx.settings) as store:
        for run in range(runs + 1):
            started = time.perf_counter()
            result = loop_pass(ctx, store)
            if run:  # the first pass of a loop parses every file; later ones only stat them
                samples.append(time.perf_counter() - started)
            if result.results or len(result.routes) != n:
                raise RuntimeError(f"pass was not a no-op: {len(result.results)} changes, "
                                   f"{len(result.routes)} routes of {n}")
    return samples


def newest_mtime(directory: Path) -> float:
    return max((p.stat().st_mtime for p in directory.glob("*.yaml")), default=0.0)


def pass_row(key: str, n: int, samples: list[float], target_ms: int, how: str) -> Row:
    s = summarize(samples)
    return Row(key, f"no-op pass {n}", f"one resync pass with {n} unchanged specs, in process ({how})",
               fmt_summary(s), f"≤ {target_ms} ms", s.median * 1000 <= target_ms, data={"samples": samples})


def pass_small(b: Bench, ws: Workspace) -> list[Row]:
    n = b.sizes.pass_sizes[0]
    samples = timed_passes(ws, n, b.sizes.pass_runs)
    return [pass_row("noop-pass-small", n, samples, PASS_TARGETS_MS[0], f"{n} real running sandboxes")]


@dataclass
class SnapshotEngine:
    """Replays one observed snapshot: for the 1000-spec pass, whose containers are not made."""

    instance: str
    observed: object

    def observe(self, images: Iterable[str] = ()):  # noqa: ANN201
        return self.observed


def pass_large(b: Bench) -> list[Row]:
    """1000 real spec files; the observed state they would produce, built from the specs. Every
    replayed sandbox's address is one local listener, so the readiness probes are real connects."""
    from reconciler import labels as L
    from reconciler.container_config import desired_sandbox
    from reconciler.docker_engine import DockerEngine
    from reconciler.loader import load_specs
    from reconciler.observed import Observed, ObservedSandbox

    n = b.sizes.pass_sizes[2]
    ws = b.workspace()
    ws.write_specs(names(n))
    image_id = DockerEngine(ws.instance).observe([IMAGE]).images[IMAGE]
    with _listener() as port:
        sandboxes = {}
        for i, (name, loaded) in enumerate(sorted(load_specs(ws.specs).specs.items())):
            want = desired_sandbox(loaded, ws.instance, image_id)
            labels = {**want.labels(int(time.time())), L.PORT: str(port)}
            sandboxes[name] = ObservedSandbox(
                name=name, container_id=f"{i:064x}", container_name=want.container_name, state="running",
                labels=labels, image=IMAGE, image_id=image_id, status="Up 1 minute", created=time.time(),
                ip="127.0.0.1")
        observed = Observed(instance=ws.instance, sandboxes=sandboxes, images={IMAGE: image_id})
        samples = timed_passes(ws, n, b.sizes.pass_runs, SnapshotEngine(ws.instance, observed))
    return [pass_row("noop-pass-large", n, samples, PASS_TARGETS_MS[2],
                     f"{n} real spec files; observed state replayed, probes are real connects to one listener")]


@contextmanager
def _listener() -> Iterator[int]:
    """A loopback TCP port that accepts (and drops) every connection, for the replayed sandboxes."""
    server = socket.create_server(("127.0.0.1", 0), backlog=4096)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


def scale(b: Bench) -> list[Row]:
    """N routed sandboxes: apply, Traefik render + reload, RSS; then the medium no-op pass and destroy."""
    from reconciler.labels import default_hostname

    n = b.sizes.scale
    ws = b.workspace()
    ws.write_specs(names(n))
    rows: list[Row] = []
    with b.traefik(ws) as traefik:
        b.say(f"  scale: applying {n} sandboxes")
        applied = ws.reconcile("apply")
        expected = {f"rc-{ws.instance}-{s}" for s in names(n)}
        deadline = time.monotonic() + 30
        while not expected <= (routers := traefik.enabled_routers()):  # Traefik reloads a moment later
            if time.monotonic() > deadline:
                raise RuntimeError(f"Traefik lists {len(expected & routers)} of {n} routers enabled")
            time.sleep(0.05)
        hosts = [f"{default_hostname(ws.instance, s)}.localhost" for s in names(n)]
        sample = hosts[:: max(1, n // 30)]
        bad = [h for h in sample if traefik.status(h) != 200]
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(sample)} sampled hosts did not answer 200 through Traefik")
        render_s, reload_s = reloads(b, ws, traefik)
        rows.append(Row("scale-apply", f"scale {n}: apply", f"`reconcile apply` of {n} new routed sandboxes, "
                        "until every one answers and is in the Traefik file", fmt_time(applied.seconds) + " (n=1)",
                        "(no target)", None, data={"seconds": applied.seconds}))
        rows.append(Row("scale-reload", f"scale {n}: render + reload",
                        f"render + validate the Traefik file for {n} routes; write → a re-added route answers 200",
                        f"render {fmt_summary(summarize(render_s))}; reload {fmt_summary(summarize(reload_s))}",
                        "(no target)", None, data={"render": render_s, "reload": reload_s}))
        b.say(f"  scale: no-op passes with {n} sandboxes")
        samples = timed_passes(ws, n, b.sizes.pass_runs)
        rows.append(pass_row("noop-pass-medium", n, samples, PASS_TARGETS_MS[1], f"{n} real running sandboxes"))
        rows.append(rss_row(b, ws, n, applied.max_rss_kib))
    b.say(f"  scale: destroying {n}")
    destroyed = ws.reconcile("destroy", "--all", "--volumes")
    left = b.owned_count(ws.instance)
    if left:
        raise RuntimeError(f"destroy --all --volumes left {left} owned objects")
    rows[0].detail = f"destroy --all --volumes of {n}: {fmt_time(destroyed.seconds)}"
    return rows


def reloads(b: Bench, ws: Workspace, traefik: Traefik) -> tuple[list[float], list[float]]:
    """Drop one route and put it back, ``reload_runs`` times: render time and write → 200 time."""
    from reconciler.controller import make_plan
    from reconciler.probe import ready_set
    from reconciler.traefik import RouterOptions, dynamic_filename, render, routes_for, write_atomic

    ctx = _ctx(ws)
    _, observed, _ = make_plan(ctx)
    ready = ready_set(observed.sandboxes.values())
    routes = routes_for([sb for sb in observed.sandboxes.values() if sb.name in ready], ws.instance, "localhost")
    filename = dynamic_filename(ws.instance)
    render_s, reload_s = [], []
    for k in range(b.sizes.reload_runs):
        dropped = routes[k * 7 % len(routes)]
        write_atomic(ws.traefik_dir, render([r for r in routes if r != dropped], ws.instance, RouterOptions()),
                     filename)
        traefik.wait_status(dropped.host, 404)
        started = time.perf_counter()
        text = render(routes, ws.instance, RouterOptions())
        render_s.append(time.perf_counter() - started)
        written = time.monotonic()
        write_atomic(ws.traefik_dir, text, filename)
        reload_s.append(traefik.wait_status(dropped.host, 200) - written)
    return render_s, reload_s


def rss_row(b: Bench, ws: Workspace, n: int, apply_rss_kib: int) -> Row:
    """The controller's memory: a settled ``reconcile watch`` with n sandboxes, else apply's peak."""
    what = f"resident memory of the controller with {n} routed sandboxes"
    apply_mib = apply_rss_kib / 1024
    if not watch_available():
        return Row("scale-rss", f"scale {n}: controller RSS", what + " (`reconcile apply` peak; watch missing)",
                   f"{apply_mib:.0f} MiB", "≤ 80 MB", apply_mib * 1024 * 1024 <= 80e6)
    with watch_process(b, ws) as watch:
        watch.wait_settled()
        rss, hwm = watch.memory_kib()
    return Row("scale-rss", f"scale {n}: controller RSS", what + " (`reconcile watch` after its passes settle)",
               f"{rss / 1024:.0f} MiB (peak {hwm / 1024:.0f} MiB)", "≤ 80 MB", hwm * 1024 <= 80e6,
               detail=f"`reconcile apply` of {n}: peak RSS {apply_mib:.0f} MiB",
               data={"rss_kib": rss, "hwm_kib": hwm, "apply_rss_kib": apply_rss_kib})
