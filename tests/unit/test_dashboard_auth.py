"""Who may read and write the dashboard: pure decisions, no server."""

from __future__ import annotations

import pytest

from reconciler.dashboard import auth
from reconciler.errors import UserError

TOKEN = "s3cret-token-0123456789"
HOSTS = auth.allowed_hosts("localhost", "127.0.0.1")


def decide(method="GET", peer="127.0.0.1", **headers):
    base = {"host": "127.0.0.1:8090"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    return auth.decide(method, base, peer, TOKEN, HOSTS)


def test_loopback_reads_need_no_token():
    assert decide().allowed


def test_reads_from_another_machine_need_the_token():
    refused = decide(peer="192.0.2.7")
    assert (refused.allowed, refused.status) == (False, 401)
    assert decide(peer="192.0.2.7", authorization=f"Bearer {TOKEN}").allowed


def test_reads_forwarded_by_a_local_proxy_for_a_remote_client_need_the_token():
    # Traefik on loopback forwarding someone else: the peer is local, the client is not.
    refused = decide(x_forwarded_for="198.51.100.4")
    assert not refused.allowed and refused.status == 401
    assert decide(x_forwarded_for="127.0.0.1").allowed


def test_unknown_host_is_refused_even_for_reads():
    # A DNS-rebinding page on evil.example resolves to 127.0.0.1 but keeps its Host.
    refused = decide(host="evil.example:8090")
    assert (refused.allowed, refused.status) == (False, 400)
    assert "evil.example" in refused.reason


def test_dashboard_host_through_traefik_is_known():
    assert decide(host="reconciler.localhost:8080").allowed


def test_write_without_token_is_refused():
    refused = decide("POST", content_type="application/json")
    assert (refused.allowed, refused.status) == (False, 401)
    assert "token" in refused.reason


def test_write_with_wrong_token_is_refused():
    refused = decide("POST", authorization="Bearer not-the-token-at-all")
    assert (refused.allowed, refused.status) == (False, 401)
    assert refused.reason == "wrong admin token"


def test_write_with_token_in_either_header_is_allowed():
    assert decide("POST", authorization=f"Bearer {TOKEN}").allowed
    assert decide("DELETE", x_reconciler_token=TOKEN).allowed


def test_write_from_a_foreign_origin_is_refused_even_with_the_token():
    refused = decide("POST", authorization=f"Bearer {TOKEN}", origin="http://evil.example")
    assert (refused.allowed, refused.status) == (False, 403)


def test_write_from_a_sandbox_page_same_site_is_refused():
    # A sandbox at qa-….localhost:8080 is same-site with reconciler.localhost:8080.
    refused = decide("POST", host="reconciler.localhost:8080", authorization=f"Bearer {TOKEN}",
                     origin="http://qa-0123456789ab.localhost:8080")
    assert (refused.allowed, refused.status) == (False, 403)
    refused = decide("POST", host="reconciler.localhost:8080", authorization=f"Bearer {TOKEN}",
                     sec_fetch_site="same-site")
    assert (refused.allowed, refused.status) == (False, 403)


def test_write_from_the_page_itself_is_allowed():
    assert decide("POST", host="reconciler.localhost:8080", authorization=f"Bearer {TOKEN}",
                  origin="http://reconciler.localhost:8080", sec_fetch_site="same-origin").allowed


def test_origin_with_another_port_is_foreign():
    assert not decide("POST", authorization=f"Bearer {TOKEN}", origin="http://127.0.0.1:9999").allowed


def test_a_cookie_is_never_a_token():
    assert not decide("POST", cookie=f"token={TOKEN}").allowed


def test_token_from_environment_or_generated():
    assert auth.admin_token({auth.TOKEN_ENV: TOKEN}) == (TOKEN, False)
    generated, was_generated = auth.admin_token({})
    assert was_generated and len(generated) >= auth.MIN_TOKEN_LENGTH
    assert auth.admin_token({})[0] != generated


def test_short_configured_token_is_an_error():
    with pytest.raises(UserError, match="at least 16"):
        auth.admin_token({auth.TOKEN_ENV: "short"})


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:8090", "127.0.0.1"), ("[::1]:8090", "::1"), ("Reconciler.LOCALHOST", "reconciler.localhost"),
    ("::1", "::1"), ("", None),
])
def test_host_name(header, name):
    assert auth.host_name(header) == name


def test_listen_address_and_extra_hosts_are_allowed():
    hosts = auth.allowed_hosts("example.com", "192.0.2.10", ["dash.example.com"])
    assert {"192.0.2.10", "dash.example.com", "reconciler.example.com", "127.0.0.1"} <= hosts
    assert "0.0.0.0" not in auth.allowed_hosts("example.com", "0.0.0.0")


def test_the_page_shell_is_public_but_its_data_is_not():
    for path in ("/", "/static/dashboard.js", "/healthz"):
        assert auth.decide("GET", {"host": "reconciler.localhost"}, "192.0.2.7", TOKEN, HOSTS, path).allowed
    for path in ("/api/overview", "/metrics", "/api/openapi.json"):
        assert not auth.decide("GET", {"host": "reconciler.localhost"}, "192.0.2.7", TOKEN, HOSTS, path).allowed
    # Public or not, a foreign Host gets nothing.
    assert not auth.decide("GET", {"host": "evil.example"}, "192.0.2.7", TOKEN, HOSTS, "/").allowed
