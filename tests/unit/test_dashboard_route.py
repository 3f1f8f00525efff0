"""The dashboard's own Traefik route: rendered and validated like the sandboxes' routes."""

from __future__ import annotations

from ruamel.yaml import YAML

from reconciler.dashboard.route import dashboard_route, dashboard_url, publish_route, route_filename
from reconciler.settings import Settings


def test_default_instance_is_reconciler_dot_domain(tmp_path):
    settings = Settings(traefik_dir=tmp_path, domain="example.com", web_port=8443)
    route = dashboard_route(settings, "0.0.0.0", 8090)
    assert (route.host, route.url) == ("reconciler.example.com", "http://127.0.0.1:8090")
    assert dashboard_url(settings) == "http://reconciler.example.com:8443"
    path = publish_route(settings, route)
    assert path.name == "reconciler-dashboard.yml"
    data = YAML(typ="safe").load(path.read_text())
    router = data["http"]["routers"]["reconciler-dashboard-default"]
    assert router["rule"] == "Host(`reconciler.example.com`)" and router["entryPoints"] == ["web"]
    servers = data["http"]["services"]["reconciler-dashboard-default"]["loadBalancer"]["servers"]
    assert servers == [{"url": "http://127.0.0.1:8090"}]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_other_instances_get_their_own_name_and_file(tmp_path):
    settings = Settings(traefik_dir=tmp_path, instance="ci7")
    assert dashboard_route(settings, "127.0.0.1", 9000).host == "reconciler-ci7.localhost"
    assert route_filename(settings) == "reconciler-dashboard-ci7.yml"


def test_ipv6_listen_address_is_bracketed(tmp_path):
    settings = Settings(traefik_dir=tmp_path)
    route = dashboard_route(settings, "::1", 8090)
    assert route.url == "http://[::1]:8090"
    assert "http://[::1]:8090" in publish_route(settings, route).read_text()


def test_tls_resolver_is_rendered_as_for_sandboxes(tmp_path):
    settings = Settings(traefik_dir=tmp_path, tls_resolver="le")
    text = publish_route(settings, dashboard_route(settings, "127.0.0.1", 8090)).read_text()
    assert YAML(typ="safe").load(text)["http"]["routers"]["reconciler-dashboard-default"]["tls"] == {
        "certResolver": "le"}
    assert dashboard_url(settings) == "https://reconciler.localhost:8080"
