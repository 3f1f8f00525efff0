"""CLI command: serve (the dashboard alone). Parsing and output only; the work lives in reconciler.dashboard."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Callable

from .settings import Settings

AddCommand = Callable[..., argparse.ArgumentParser]


def register(add: AddCommand) -> None:
    """Add this area's subcommands with ``add(name, func, help) -> parser``."""
    p = add("serve", cmd_serve, "serve the dashboard (sandboxes, events, plan, actions, /metrics) until Ctrl-C")
    p.add_argument("--listen", default=os.environ.get("RECONCILER_DASHBOARD_LISTEN", "127.0.0.1"), metavar="ADDR",
                   help="address to listen on ($RECONCILER_DASHBOARD_LISTEN)")
    p.add_argument("--port", type=int, default=int(os.environ.get("RECONCILER_DASHBOARD_PORT", "8090")),
                   metavar="PORT", help="port to listen on; 0 picks a free one ($RECONCILER_DASHBOARD_PORT)")
    p.add_argument("--no-route", action="store_true",
                   help="do not write the dashboard's route into the Traefik directory")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name the dashboard answers to (repeatable), e.g. the server's DNS name")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import context_for
    from .dashboard.auth import admin_token
    from .dashboard.route import dashboard_url

    if not 0 <= args.port <= 65535:
        print(f"reconcile: --port: expected 0 to 65535, got {args.port}", file=sys.stderr)
        return 2
    token, generated = admin_token(os.environ)
    ctx = context_for(settings)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    from .dashboard import serve_in_thread

    server = serve_in_thread(
        ctx, args.listen, args.port, token, stop, route=not args.no_route, extra_hosts=tuple(args.allow_host),
    )
    fragment = f"#token={token}" if generated else ""
    print(f"Dashboard: {server.url}/{fragment}", flush=True)
    if not args.no_route:
        print(f"Through a Traefik watching {settings.traefik_dir}: "
              f"{dashboard_url(settings)}/", flush=True)
    if generated:
        print(f"Admin token (generated; set RECONCILER_ADMIN_TOKEN to choose one): {token}", flush=True)
    print(f"Metrics: {server.url}/metrics · API: {server.url}/api/openapi.json · Ctrl-C stops", flush=True)
    try:
        while not stop.wait(0.5):
            if not server.alive:
                print("reconcile: the dashboard server stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
