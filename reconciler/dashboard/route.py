"""The dashboard's own route in Traefik's directory: ``reconciler.<domain>``.

A file of its own next to the sandboxes' (``reconciler-dashboard[-<instance>].yml``),
so neither writer ever rewrites the other's; rendered and validated by the same
renderer as the sandboxes' routes, and written by temp file and rename.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from ..default_cert import ensure_default_certificate
from ..traefik import Route, RouterOptions, render, write_atomic


def _hostname(settings: Settings) -> str:
    return "reconciler" if settings.instance == "default" else f"reconciler-{settings.instance}"


def dashboard_host(settings: Settings) -> str:
    """``reconciler.<domain>``; other instances sharing a Traefik get ``reconciler-<instance>.<domain>``."""
    return f"{_hostname(settings)}.{settings.domain}"


def dashboard_url(settings: Settings) -> str:
    """Where users reach the dashboard through Traefik, e.g. ``http://reconciler.localhost:8080``."""
    return settings.url_for(_hostname(settings))


def route_filename(settings: Settings) -> str:
    suffix = "" if settings.instance == "default" else f"-{settings.instance}"
    return f"reconciler-dashboard{suffix}.yml"


def dashboard_route(settings: Settings, listen: str, port: int) -> Route:
    """Traefik's route to the dashboard: its own host name, to a loopback or the listen address."""
    address = "127.0.0.1" if listen in ("0.0.0.0", "", "::") else listen
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return Route(name=f"reconciler-dashboard-{settings.instance}", host=dashboard_host(settings),
                 url=f"http://{address}:{port}")


def publish_route(settings: Settings, route: Route) -> Path:
    """Write the dashboard's own dynamic file (rendered and validated like the sandboxes' file)."""
    options = RouterOptions(domain=settings.domain, entrypoint=settings.entrypoint,
                            tls_resolver=settings.tls_resolver)
    text = render([route], settings.instance, options)
    ensure_default_certificate(settings.traefik_dir)
    write_atomic(settings.traefik_dir, text, route_filename(settings))
    return settings.traefik_dir / route_filename(settings)
