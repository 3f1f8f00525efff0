"""CLI commands: up (Traefik + the watch loop on one machine). Parsing and output only; the work lives elsewhere."""

from __future__ import annotations

import argparse
from typing import Callable

AddCommand = Callable[..., argparse.ArgumentParser]


def register(add: AddCommand) -> None:
    """Add this area's subcommands with ``add(name, func, help) -> parser``."""
