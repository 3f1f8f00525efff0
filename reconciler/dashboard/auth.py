"""Who may read and who may write: the dashboard is an admin surface.

- Every request must name a Host this server answers to (so a DNS-rebinding
  page on a foreign name gets nothing, not even reads).
- Reads of data (``/api/…``, ``/metrics``) are open to loopback clients only
  (directly, or through a local Traefik whose X-Forwarded-For is loopback
  too); anyone else needs the token. The page's shell holds no data and is
  public, so a browser elsewhere can load it and send the token with each call.
- Writes always need the token, sent in a header (``Authorization: Bearer`` or
  ``X-Reconciler-Token``), never a cookie: a browser never attaches it to a
  cross-site request by itself. On top of that a write whose ``Origin`` is not
  this server's own, or that the browser marks as cross-site or same-site
  (a sandbox page at ``qa-….localhost`` is same-site), is refused. There are
  no CORS headers: a foreign page cannot even send the token header.

Pure functions: the app turns their answers into responses.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UserError

TOKEN_ENV = "RECONCILER_ADMIN_TOKEN"
MIN_TOKEN_LENGTH = 16
TOKEN_HEADER = "x-reconciler-token"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200  # 401 no/wrong token, 403 foreign origin, 400 unknown Host
    reason: str = ""


ALLOW = Decision(True)


def check_token_value(token: str) -> str:
    """A configured token must be long enough to resist guessing."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise UserError(
            f"{TOKEN_ENV}: expected at least {MIN_TOKEN_LENGTH} characters, got {len(token)}; "
            "leave it unset to have one generated"
        )
    return token


def admin_token(environ: Mapping[str, str]) -> tuple[str, bool]:
    """(token, generated): ``$RECONCILER_ADMIN_TOKEN``, else a fresh random one."""
    configured = environ.get(TOKEN_ENV, "")
    if configured:
        return check_token_value(configured), False
    return secrets.token_urlsafe(24), True


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return address.strip().lower() == "localhost"


def client_is_local(peer: str | None, forwarded_for: str | None) -> bool:
    """The TCP peer is loopback, and so is every hop a proxy recorded."""
    if not is_loopback(peer):
        return False
    if forwarded_for:
        return all(is_loopback(hop) for hop in forwarded_for.split(","))
    return True


def host_name(host_header: str | None) -> str | None:
    """The name part of a Host header, lower-cased, without the port."""
    if not host_header:
        return None
    raw = host_header.strip().lower()
    if raw.startswith("["):
        end = raw.find("]")
        return raw[1:end] if end > 0 else None
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


def allowed_hosts(domain: str, listen: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names this server answers to: loopback names, ``reconciler.<domain>``, its listen address."""
    names = {"127.0.0.1", "localhost", "::1", f"reconciler.{domain}"}
    if listen not in ("0.0.0.0", "::", ""):
        names.add(listen.strip("[]").lower())
    names.update(h.strip().lower() for h in extra if h.strip())
    return frozenset(names)


def token_matches(presented: str | None, expected: str) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token from ``Authorization: Bearer …`` or ``X-Reconciler-Token`` (never a cookie)."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get(TOKEN_HEADER) or None


def same_origin(origin: str, host_header: str | None) -> bool:
    """``Origin`` names this very server: same host and port as the Host header."""
    if not host_header:
        return False
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    default = "443" if parts.scheme == "https" else "80"
    want_host = host_name(host_header)
    want_port = host_header.strip().rsplit(":", 1)[1] if host_header.strip().count(":") == 1 else default
    got_port = str(parts.port) if parts.port else default
    return parts.hostname == want_host and got_port == want_port


def is_public(path: str) -> bool:
    """The page's shell (HTML, script, style) holds no data: anyone may load it, so
    a browser elsewhere can open the page and then send the token with each call."""
    return path in ("/", "/healthz") or path.startswith("/static/")


def decide(
    method: str,
    headers: Mapping[str, str],
    peer: str | None,
    token: str,
    hosts: frozenset[str],
    path: str = "/api/",
) -> Decision:
    """Whether to serve this request. ``headers`` keys are lower-case."""
    host = headers.get("host")
    if host_name(host) not in hosts:
        return Decision(False, 400, f"unknown Host {host!r}: this server answers to {', '.join(sorted(hosts))}")
    has_token = token_matches(presented_token(headers), token)
    if method.upper() not in WRITE_METHODS:
        if is_public(path) or has_token or client_is_local(peer, headers.get("x-forwarded-for")):
            return ALLOW
        if presented_token(headers):
            return Decision(False, 401, "wrong admin token")
        return Decision(False, 401, "reads from other machines need the admin token")
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, host):
        return Decision(False, 403, f"cross-origin write refused (Origin {origin})")
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return Decision(False, 403, f"cross-site write refused (Sec-Fetch-Site {fetch_site})")
    if not presented_token(headers):
        return Decision(False, 401, "writes need the admin token (Authorization: Bearer <token>)")
    if not has_token:
        return Decision(False, 401, "wrong admin token")
    return ALLOW
