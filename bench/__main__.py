"""``python -m bench [--quick] [--only CASE ...] [--output FILE]``: measure, print, write BENCHMARKS.md.

A full run rewrites BENCHMARKS.md at the repo root; ``--quick`` and ``--only``
runs write build/bench-quick.md unless ``--output`` says otherwise, so a smoke
run never replaces the committed figures. Exit code 1 when any case could not
be measured (the figures themselves are not judged here: see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import cases_compose, cases_loop, dashboard, pool, watch
from .machine import REPO, describe, traefik_version
from .peers import PeerError, compose_v1, compose_v2
from .report import ROW_KEYS, Row, failed_row, terminal, write
from .runner import FULL, QUICK, Bench
from .workload import IMAGE

# Case groups, in the order they run; each makes the rows listed.
GROUPS: dict[str, tuple[str, ...]] = {
    "compose": ("cold-apply-small", "cold-apply-large", "destroy"),
    "noop": ("noop-apply", "noop-pass-small"),
    "pass-large": ("noop-pass-large",),
    "scale": ("scale-apply", "scale-reload", "noop-pass-medium", "scale-rss"),
    "watch": ("spec-to-routable", "drift-repair", "idle-cpu"),
    "pool": ("spec-to-routable-pool",),
    "dashboard": ("dashboard-table",),
}


def _runner(group: str) -> Callable[[Bench], list[Row]]:
    return {
        "compose": cases_compose.cold_and_destroy,
        "noop": lambda b: cases_compose.noop(b, cases_loop.pass_small),
        "pass-large": cases_loop.pass_large,
        "scale": cases_loop.scale,
        "watch": watch.watch_rows,
        "pool": pool.pool_rows,
        "dashboard": dashboard.dashboard_rows,
    }[group]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few runs (under 2 minutes): proves it works")
    p.add_argument("--only", action="append", default=[], metavar="CASE",
                   help=f"run only this group or row (repeatable): {', '.join(GROUPS)} or a row key")
    p.add_argument("--output", type=Path, help="markdown report (default BENCHMARKS.md for a full run)")
    p.add_argument("--json", type=Path, help="also write the rows and raw samples as JSON here")
    args = p.parse_args(argv)
    for name in args.only:
        if name not in GROUPS and name not in ROW_KEYS:
            p.error(f"unknown case {name!r}: expected one of {', '.join([*GROUPS, *ROW_KEYS])}")
    return args


def selected_groups(only: list[str]) -> list[str]:
    if not only:
        return list(GROUPS)
    return [g for g, keys in GROUPS.items() if g in only or any(k in only for k in keys)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    partial = args.quick or bool(args.only)
    output = args.output or (REPO / "build" / "bench-quick.md" if partial else REPO / "BENCHMARKS.md")
    output.parent.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    import docker

    try:
        api = docker.APIClient(timeout=300, max_pool_size=32)
        api.ping()
    except Exception as exc:  # noqa: BLE001 - any failure: no engine to measure
        print(f"bench: Docker engine not reachable ({exc}); run scripts/setup", file=sys.stderr)
        return 1
    if not api.images(name=IMAGE):
        print(f"bench: image {IMAGE} missing; run scripts/build-images", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    try:
        peers = [compose_v2(root, say), compose_v1(say)]
    except PeerError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    from reconciler.traefik_proc import traefik_binary

    machine = describe(api.version().get("Version", "unknown"), traefik_version(traefik_binary()),
                       peers[0].version, peers[1].version)
    bench = Bench(root=root, sizes=QUICK if args.quick else FULL, peers=peers, say=say, api=api)
    rows: dict[str, Row] = {}
    failures = 0
    try:
        for group in selected_groups(args.only):
            say(f"{group} ...")
            try:
                for row in _runner(group)(bench):
                    rows[row.key] = row
            except Exception as exc:  # noqa: BLE001 - one case failing must not lose the others' figures
                failures += 1
                say(f"{group} FAILED: {type(exc).__name__}: {exc}")
                for key in GROUPS[group]:
                    rows.setdefault(key, failed_row(key, key, f"{type(exc).__name__}: {exc}"))
            finally:
                bench.cleanup()
    finally:
        bench.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    ordered = [rows[k] for k in ROW_KEYS if k in rows]
    mode = "quick" if args.quick else "full"
    write(ordered, machine, mode, time.monotonic() - started, output, args.json, bench.owned, bench.stuck)
    print(terminal(ordered))
    say(f"wrote {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
