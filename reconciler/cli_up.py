"""CLI commands: up (Traefik + the watch loop on one machine). Parsing and output only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .cli_loop import seconds_arg
from .settings import Settings

AddCommand = Callable[..., argparse.ArgumentParser]


def register(add: AddCommand) -> None:
    """Add this area's subcommands with ``add(name, func, help) -> parser``."""
    p = add("up", cmd_up, "run Traefik and the watch loop on this machine until Ctrl-C (sandboxes keep running)")
    p.add_argument("--listen", default=os.environ.get("RECONCILER_LISTEN", "127.0.0.1"), metavar="ADDR",
                   help="IP address of the web entrypoint; 0.0.0.0 on a server ($RECONCILER_LISTEN)")
    p.add_argument("--api-port", type=int, default=os.environ.get("RECONCILER_API_PORT", "8081"),
                   metavar="PORT", help="Traefik's API and dashboard, always on 127.0.0.1 ($RECONCILER_API_PORT)")
    p.add_argument("--resync", type=seconds_arg, default=30.0, metavar="DURATION",
                   help="full resync period of the watch loop, e.g. 30s or 5m (default 30s)")
    p.add_argument("--traefik-arg", action="append", default=[], metavar="FLAG",
                   help="extra Traefik flag, repeatable, e.g. a certificate resolver's definition: "
                        "--traefik-arg=--certificatesresolvers.le.acme.tlschallenge=true")
    p.add_argument("--dashboard-port", type=int, default=os.environ.get("RECONCILER_DASHBOARD_PORT", "8090"),
                   metavar="PORT", help="the web dashboard on 127.0.0.1, also routed at http://reconciler.<domain>; "
                                        "0 picks a free port ($RECONCILER_DASHBOARD_PORT)")
    p.add_argument("--no-dashboard", action="store_true", help="do not serve the web dashboard")


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from .cli import context_for
    from .up import UpOptions, run_up

    options = UpOptions(listen=args.listen, api_port=args.api_port, resync_interval=args.resync,
                        traefik_args=tuple(args.traefik_arg),
                        dashboard_port=None if args.no_dashboard else args.dashboard_port)

    def say(line: str) -> None:
        print(line, flush=True)

    if args.output == "json":
        print("reconcile: up prints progress lines only; --output json is not supported", file=sys.stderr)
        return 2
    return run_up(context_for(settings), options, say)
