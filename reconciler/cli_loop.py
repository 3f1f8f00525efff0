"""CLI commands: watch, extend, events, gc (the control loop). Parsing and output only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Callable

from .settings import Settings

AddCommand = Callable[..., argparse.ArgumentParser]


def register(add: AddCommand) -> None:
    """Add this area's subcommands with ``add(name, func, help) -> parser``."""
    p = add("watch", cmd_watch, "keep Docker and Traefik equal to the specs until SIGINT/SIGTERM "
                                "(sandboxes keep running when it stops)")
    p.add_argument("--resync", type=seconds_arg, default=30.0, metavar="DURATION",
                   help="full resync period, e.g. 30s, 5m or 0.5 (default 30s)")
    p.add_argument("--quiet", "-q", action="store_true", help="print errors only")
    p = add("extend", cmd_extend, "push a sandbox's expiry (its ttl) by DURATION; an expired one comes back")
    p.add_argument("name")
    p.add_argument("duration", type=seconds_arg, help="e.g. 30m, 2h, 1d")
    p = add("events", cmd_events, "print the events log: what was created, recreated, destroyed, expired, and why")
    p.add_argument("--since", type=since_arg, default=None, metavar="WHEN",
                   help="a duration ago (1h, 30m) or a time (2026-01-01T10:00:00Z)")
    p.add_argument("--name", default=None, help="only this sandbox's events")
    add("gc", cmd_gc, "one-shot sweep for cron: destroy expired sandboxes and orphans, create nothing")


def seconds_arg(text: str) -> float:
    """``30s``, ``5m``, ``1h30m`` or a plain number of seconds."""
    from .spec import parse_duration

    try:
        value = float(text)
    except ValueError:
        try:
            value = float(parse_duration(text))
        except Exception:  # noqa: BLE001 - pydantic's error type: say it our way
            raise argparse.ArgumentTypeError(f"expected a duration like 30s, 5m or 2h, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return value


def since_arg(text: str) -> float:
    """A duration ago, or an ISO time, as unix seconds."""
    try:
        return time.time() - seconds_arg(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration (1h) or a time (2026-01-01T10:00:00Z), got {text!r}") from None
    return when.timestamp()


def _line(event) -> str:  # noqa: ANN001 - status.LoopEvent
    from .lifetime import iso

    text = f"{iso(event.time)}  {event.kind:<9}  {event.name or '-'}  {event.message}"
    if event.url:
        text += f"  {event.url}"
    return text


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import context_for
    from .loop import run_watch

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(event) -> None:  # noqa: ANN001 - status.LoopEvent
        if args.quiet and event.kind != "error":
            return
        if args.output == "json":
            line = json.dumps(event.to_json(), sort_keys=False)
        else:
            line = _line(event)
        stream = sys.stderr if event.kind == "error" and args.output != "json" else sys.stdout
        print(line, file=stream, flush=True)

    run_watch(context_for(settings), stop, resync_interval=args.resync, on_event=show)
    if any(t.is_alive() and t.name.startswith("reconcile_") for t in threading.enumerate()):
        # Engine calls abandoned at the stop deadline: do not wait for them. What
        # they leave half done is what a kill -9 leaves, and the next watch repairs it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_extend(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import _check_names, emit_json
    from .lifetime import iso
    from .loop import extend

    _check_names([args.name])
    expires = extend(settings, args.name, args.duration)
    if args.output == "json":
        emit_json({"name": args.name, "expires_at": iso(expires), "unix": expires})
    else:
        left = max(0, round(expires - time.time()))
        print(f"{args.name}: expires {iso(expires)} (in {left}s)")
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import emit_json
    from .state import open_store, store_path

    if not store_path(settings).exists():
        events = []
    else:
        with open_store(settings) as store:
            events = store.events(since=args.since, name=args.name)
    if args.output == "json":
        emit_json([e.to_json() for e in events])
    else:
        for event in events:
            print(_line(event))
    return 0


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import context_for, emit_json
    from .controller import gc_once
    from .plan import SYMBOLS

    result = gc_once(context_for(settings))
    if args.output == "json":
        emit_json({
            "ok": all(r.ok for r in result.results),
            "results": [r.to_json() for r in result.results],
            "orphan_networks": list(result.plan.orphan_networks),
            "orphan_volumes": list(result.plan.orphan_volumes),
        })
    else:
        for r in result.results:
            mark = "done" if r.ok else f"FAILED: {r.error}"
            print(f"{SYMBOLS[r.change.action]:>3} {r.change.name} ({r.change.cause}): {mark}")
        for net in result.plan.orphan_networks:
            print(f"  - network {net} (orphan): removed")
        for vol in result.plan.orphan_volumes:
            print(f"  - volume {vol} (orphan): removed")
        if not result.results and not result.plan.orphan_networks and not result.plan.orphan_volumes:
            print("Nothing to collect.")
    return 0 if all(r.ok for r in result.results) else 1
