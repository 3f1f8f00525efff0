"""The rows measured side by side with Docker Compose: cold apply, destroy, no-op apply.

Runs are paired: one reconcile run, then one run of each Compose, then the next
round, so a machine that slows down mid-run slows every contender alike.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .peers import Peer, StuckNetwork, compose_file
from .report import Row
from .runner import Bench
from .stats import fmt_ratio, fmt_summary, fmt_time, ratios, summarize
from .workload import IMAGE, INSTANCE_LABEL, PROJECT_LABEL, Timed, names, timed_run

FLOOR_POOL = "10.212"  # /28s for the engine-floor networks; the reconciler's pool is 10.213.0.0/16
FLOOR_LABEL = "reconciler-bench.floor"
IMPORT_FLOOR = "import docker, pydantic, ruamel.yaml"  # what any one-shot reconcile command must load


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


def cold_and_destroy(b: Bench) -> list[Row]:
    """``reconcile apply`` from nothing vs ``docker compose up -d``, then destroy vs ``down -t 0``."""
    rows = []
    destroy_samples: dict[str, list[float]] = {}
    for key, n, runs in (("cold-apply-small", b.sizes.cold[0], b.sizes.cold_runs[0]),
                         ("cold-apply-large", b.sizes.cold[1], b.sizes.cold_runs[1])):
        samples: dict[str, list[float]] = {"reconcile": [], **{p.key: [] for p in b.peers}}
        downs: dict[str, list[float]] = {"reconcile": [], **{p.key: [] for p in b.peers}}
        sandboxes = names(n)
        for run in range(runs):
            b.say(f"  cold apply {n}: run {run + 1}/{runs}")
            ws = b.workspace()
            ws.write_specs(sandboxes)
            samples["reconcile"].append(ws.reconcile("apply").seconds)
            _check(b.running(INSTANCE_LABEL, ws.instance) == n, f"reconcile apply did not start {n} sandboxes")
            downs["reconcile"].append(ws.reconcile("destroy", "--all", "--volumes").seconds)
            _check(b.owned_count(ws.instance) == 0, "reconcile destroy --all left owned objects")
            for peer in b.peers:
                project = b.project()
                cfile = compose_file(ws.root, sandboxes)
                samples[peer.key].append(peer.run(project, cfile, "up", "-d"))
                _check(b.running(PROJECT_LABEL, project) == n, f"{peer.label} up -d did not start {n} services")
                downs[peer.key].append(compose_down(b, peer, project, cfile))
        ours = samples["reconcile"]
        detail = (f"cold apply {n}: Compose v2 {fmt_summary(summarize(samples['v2']))}, Compose v1 "
                  f"{fmt_summary(summarize(samples['v1']))}")
        floor = None
        if key == "cold-apply-large":  # once: it takes as long as a reconcile run
            floor = engine_floor(b, n)
            detail += (f"; engine floor (docker-py straight, 8 threads, a network per container as the "
                       f"reconciler makes) {fmt_time(floor[0])} to create, {fmt_time(floor[1])} to remove")
        row = Row(key, f"cold apply {n}", f"`reconcile apply` of {n} new specs vs `docker compose up -d` of "
                  f"{n} services (whole process, until it exits)", fmt_summary(summarize(ours)), "ratio ≤ 1.0",
                  detail=detail, data={"samples": samples, "floor": floor})
        _ratios(row, b, samples)
        rows.append(row)
        destroy_samples = downs
        destroy_n = n
    ours = destroy_samples["reconcile"]
    row = Row("destroy", f"destroy {destroy_n}", f"`reconcile destroy --all` vs `docker compose down -t 0`, "
              f"{destroy_n} running", fmt_summary(summarize(ours)), "ratio ≤ 1.0",
              detail=(f"destroy {destroy_n}: Compose v2 {fmt_summary(summarize(destroy_samples['v2']))}, "
                      f"Compose v1 {fmt_summary(summarize(destroy_samples['v1']))}"),
              data={"samples": destroy_samples})
    _ratios(row, b, destroy_samples)
    rows.append(row)
    return rows


def _ratios(row: Row, b: Bench, samples: dict[str, list[float]], limit: float = 1.0) -> None:
    met = True
    for peer in b.peers:
        r = ratios(samples["reconcile"], samples[peer.key])
        setattr(row, f"vs_{peer.key}", fmt_ratio(r))
        row.data[f"ratio_{peer.key}"] = r.to_json()
        if peer.key == "v2":  # the target is set against the current Compose
            met = r.median <= limit
    row.met = met


def noop(b: Bench, pass_rows) -> list[Row]:  # noqa: ANN001 - pass_rows(bench, ws) -> list[Row]
    """A second ``reconcile apply`` with nothing to do vs Compose's no-op ``up -d``."""
    n = b.sizes.noop_specs
    sandboxes = names(n)
    ws = b.workspace()
    ws.write_specs(sandboxes)
    b.say(f"  no-op apply: setting up {n} sandboxes for each contender")
    ws.reconcile("apply")
    cfile = compose_file(ws.root, sandboxes)
    projects = {}
    for peer in b.peers:
        projects[peer.key] = b.project()
        peer.run(projects[peer.key], cfile, "up", "-d")
    samples: dict[str, list[float]] = {"reconcile": [], **{p.key: [] for p in b.peers}}
    rss: list[int] = []
    imports: list[float] = []  # the floor: an interpreter that only imports the stack
    for run in range(b.sizes.noop_runs):
        result: Timed = ws.reconcile("apply")
        _check("No changes" in result.stdout, f"second apply was not a no-op: {result.stdout[-500:]}")
        samples["reconcile"].append(result.seconds)
        rss.append(result.max_rss_kib)
        imports.append(timed_run([sys.executable, "-c", IMPORT_FLOOR]).seconds)
        for peer in b.peers:
            samples[peer.key].append(peer.run(projects[peer.key], cfile, "up", "-d"))
    row = Row("noop-apply", f"no-op apply {n}", f"second `reconcile apply` (whole process) vs Compose's no-op "
              f"`up -d`, {n} specs", fmt_summary(summarize(samples["reconcile"])), "ratio ≤ 2.0",
              detail=(f"no-op apply {n}: Compose v2 {fmt_summary(summarize(samples['v2']))}, Compose v1 "
                      f"{fmt_summary(summarize(samples['v1']))}; reconcile peak RSS {max(rss) / 1024:.0f} MiB; "
                      f"floor: `python -c \"{IMPORT_FLOOR}\"` {fmt_summary(summarize(imports))}"),
              data={"samples": samples, "import_floor": imports})
    _ratios(row, b, samples, limit=2.0)
    rows = [row, *pass_rows(b, ws)]
    for peer in b.peers:
        compose_down(b, peer, projects[peer.key], cfile)
    ws.reconcile("destroy", "--all", "--volumes")
    return rows


def compose_down(b: Bench, peer: Peer, project: str, cfile: Path) -> float:
    """``down -t 0``; its seconds. A network the daemon keeps with a stale endpoint (dockerd 20.10,
    seen about once in ten `down`s of 50 services here) is noted, not fatal, once no container is left."""
    try:
        return peer.run(project, cfile, "down", "-t", "0")
    except StuckNetwork as exc:
        left = len(b.api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={project}"}))  # type: ignore[attr-defined]
        if left:
            raise
        b.stuck.append(f"{project}_default")
        b.say(f"  {peer.label} down: dockerd keeps network {project}_default ({exc}); its containers are gone")
        return exc.seconds


def engine_floor(b: Bench, n: int) -> tuple[float, float]:
    """What the engine itself costs for the reconciler's layout: ``n`` bridge networks
    and ``n`` containers (create + start), then their removal, straight through docker-py."""
    import docker

    api = b.api
    key = b.project("floor", FLOOR_LABEL)
    label = {FLOOR_LABEL: key}

    def make(i: int) -> str:
        net = f"{key}-{i}"
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=f"{FLOOR_POOL}.{i}.0/28", gateway=f"{FLOOR_POOL}.{i}.1")])
        api.create_network(net, driver="bridge", labels=label, ipam=ipam)
        host = api.create_host_config(init=True, network_mode=net, mem_limit=2 << 30, memswap_limit=2 << 30,
                                      nano_cpus=2_000_000_000, pids_limit=512, cap_drop=["ALL"])
        cid = api.create_container(IMAGE, ["httpd", "-f", "-p", "8000", "-h", "/www"], labels=label,
                                   host_config=host, name=net)["Id"]
        api.start(cid)
        return cid

    def unmake(i_cid: tuple[int, str]) -> None:
        api.remove_container(i_cid[1], force=True)
        api.remove_network(f"{key}-{i_cid[0]}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        started = time.perf_counter()
        cids = list(pool.map(make, range(n)))
        made = time.perf_counter() - started
        started = time.perf_counter()
        list(pool.map(unmake, enumerate(cids)))
        removed = time.perf_counter() - started
    return made, removed

