"""Traefik routes: the route model, rendering the Jinja template, validating and
writing it atomically into the directory Traefik's file provider watches.

Measured here: rewriting the file in place makes Traefik drop every route in
it for up to 2 s; a temp file (non-YAML suffix, same directory) and
``os.replace`` never does. One unparsable file fails Traefik's whole provider,
so nothing is written that does not parse back to the routes it came from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .default_cert import ensure_default_certificate
from .observed import ObservedSandbox

if TYPE_CHECKING:
    import jinja2

DYNAMIC_FILE = "dynamic-conf.yml"


def dynamic_filename(instance: str) -> str:
    """``dynamic-conf.yml`` for the default instance; other instances sharing one
    Traefik directory each get their own file, so they never overwrite each other."""
    return DYNAMIC_FILE if instance == "default" else f"dynamic-conf-{instance}.yml"
TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "traefik" / "dynamic-conf.yml.j2"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9-]+$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~/%?=&-]*$")
_URL = re.compile(r"^https?://[0-9A-Za-z.:\[\]-]+(/[A-Za-z0-9._~/-]*)?$")


class RenderError(ValueError):
    """Rendered output that Traefik would reject; it is never written."""


@dataclass(frozen=True, order=True)
class Route:
    name: str  # router and service name (no "@")
    host: str  # exact Host() match
    url: str  # where the sandbox answers
    # With a health path, Traefik itself keeps checking the sandbox after the
    # reconciler's readiness gate let it in, and stops sending to it while it fails.
    health_path: str = ""


@dataclass(frozen=True)
class RouterOptions:
    domain: str = "localhost"
    entrypoint: str = "web"
    tls_resolver: str | None = None


def check_domain(domain: str) -> str:
    """The domain must be a plain DNS name: it ends up inside a Traefik rule."""
    if not _HOST.match(domain):
        raise ValueError(f'expected a DNS domain like localhost or example.com, got "{domain}"')
    return domain


def routes_for(sandboxes: Iterable[ObservedSandbox], instance: str, domain: str) -> list[Route]:
    """One route per running sandbox that has a hostname, a port and an address."""
    out = []
    for sb in sandboxes:
        if not sb.running or not sb.endpoint or not sb.hostname:
            continue
        out.append(
            Route(
                name=f"rc-{instance}-{sb.name}",
                host=f"{sb.hostname}.{domain}",
                url=sb.endpoint,
                health_path=sb.health_path or "",
            )
        )
    return sorted(out)


def _quote(value: object) -> str:
    # JSON strings are YAML double-quoted scalars: no value can break the structure.
    return json.dumps(str(value))


def _environment(template_path: Path) -> "jinja2.Template":
    st = template_path.stat()
    return _compiled(str(template_path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _compiled(template_path: str, mtime_ns: int, size: int) -> "jinja2.Template":
    # Compiling the template costs ~10 ms; a pass renders it each time routes change.
    # jinja2 is imported here: a pass whose routes are unchanged never needs it.
    import jinja2

    path = Path(template_path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path.parent)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["q"] = _quote
    return env.get_template(path.name)


def render(
    routes: list[Route],
    instance: str,
    options: RouterOptions = RouterOptions(),
    template_path: Path = TEMPLATE_PATH,
) -> str:
    """The dynamic config text for ``routes``; raises RenderError rather than return bad output."""
    for route in routes:
        if not _SAFE_NAME.match(route.name):
            raise RenderError(f"router name {route.name!r} has characters Traefik does not accept")
        if not _HOST.match(route.host):
            raise RenderError(f"host {route.host!r} is not a DNS name")
        if not _URL.match(route.url):
            raise RenderError(f"server url {route.url!r} is not a plain http URL")
        if route.health_path and not _HEALTH_PATH.match(route.health_path):
            raise RenderError(f"health path {route.health_path!r} is not a plain HTTP path")
    if not _SAFE_NAME.match(options.entrypoint):
        raise RenderError(f"entrypoint {options.entrypoint!r} is not a plain name")
    if options.tls_resolver is not None and not _SAFE_NAME.match(options.tls_resolver):
        raise RenderError(f"TLS resolver {options.tls_resolver!r} is not a plain name")
    text = _environment(template_path).render(
        routes=routes,
        instance=instance,
        entrypoint=options.entrypoint,
        tls_resolver=options.tls_resolver,
    )
    validate(text, routes)
    return text


def validate(text: str, routes: list[Route]) -> None:
    """Parse the output back and check it says exactly ``routes``."""
    # Traefik runs every file through Go text/template before parsing YAML.
    if "{{" in text or "}}" in text:
        raise RenderError("rendered config contains '{{' or '}}'")
    from ruamel.yaml import YAML  # the C parser (ruamel.yaml.clib) when installed: ~7x faster

    try:
        data = YAML(typ="safe").load(text)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "do not write"
        raise RenderError(f"rendered config is not valid YAML: {exc}") from exc
    http = (data or {}).get("http") or {}
    routers = http.get("routers") or {}
    services = http.get("services") or {}
    if set(routers) != {r.name for r in routes} or set(services) != {r.name for r in routes}:
        raise RenderError("rendered config does not hold exactly the expected routers and services")
    for r in routes:
        servers = services[r.name]["loadBalancer"]["servers"]
        check = services[r.name]["loadBalancer"].get("healthCheck") or {}
        if check.get("path", "") != r.health_path:
            raise RenderError(f"rendered route {r.name} has the wrong health check")
        if routers[r.name]["rule"] != f"Host(`{r.host}`)" or servers != [{"url": r.url}]:
            raise RenderError(f"rendered route {r.name} does not match what was asked")


def write_atomic(directory: Path, text: str, filename: str = DYNAMIC_FILE) -> bool:
    """Write ``text`` to ``directory/filename`` by temp file + rename; False when unchanged."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    try:
        if target.read_text(encoding="utf-8") == text:
            return False
    except FileNotFoundError:
        pass
    # A non-YAML suffix: Traefik's directory loader reads every .yml/.yaml/.toml.
    tmp = directory / f".{filename}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return True


def publish(
    directory: Path,
    routes: list[Route],
    instance: str,
    options: RouterOptions = RouterOptions(),
    template_path: Path = TEMPLATE_PATH,
) -> bool:
    """Render, validate and write the routes; True when the file changed.

    The file's last line is a digest of what it was rendered from; when that is
    unchanged nothing is rendered or parsed (at 1000 routes a re-render and its
    validation cost seconds, on every resync pass)."""
    filename = dynamic_filename(instance)
    marker = f"# inputs {inputs_digest(routes, instance, options, template_path)}\n"
    try:
        if (directory / filename).read_text(encoding="utf-8").endswith(marker):
            ensure_default_certificate(directory)  # on the quiet path too: a deleted one comes back
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    text = render(routes, instance, options, template_path)
    ensure_default_certificate(directory)  # a refused render above writes nothing at all
    return write_atomic(directory, text + marker, filename)


def inputs_digest(routes: list[Route], instance: str, options: RouterOptions, template_path: Path) -> str:
    """sha256 over the routes, the instance, the router options and the template's text."""
    payload = json.dumps(
        [[[r.name, r.host, r.url, r.health_path] for r in routes], instance, options.domain, options.entrypoint,
         options.tls_resolver, template_path.read_text(encoding="utf-8")]
    )
    return hashlib.sha256(payload.encode()).hexdigest()
