"""Rendering routers with a certificate resolver (``--tls-resolver``)."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from reconciler.traefik import RenderError, Route, RouterOptions, render

ROUTES = [
    Route(name="rc-default-calc", host="calc.localhost", url="http://10.213.0.2:8000"),
    Route(name="rc-default-hello", host="hello.localhost", url="http://10.213.0.18:8080"),
]


def routers(text: str) -> dict:
    return YAML(typ="safe").load(text)["http"]["routers"]


def test_tls_resolver_sets_cert_resolver_on_every_router():
    text = render(ROUTES, "default", RouterOptions(tls_resolver="letsencrypt"))
    for name, router in routers(text).items():
        assert router["tls"] == {"certResolver": "letsencrypt"}, name
        assert router["entryPoints"] == ["web"]


def test_no_tls_resolver_means_no_tls_section():
    text = render(ROUTES, "default", RouterOptions())
    assert all("tls" not in router for router in routers(text).values())
    assert "certResolver" not in text


def test_tls_with_another_entrypoint():
    text = render(ROUTES, "default", RouterOptions(entrypoint="websecure", tls_resolver="le"))
    for router in routers(text).values():
        assert router["entryPoints"] == ["websecure"]
        assert router["tls"]["certResolver"] == "le"


@pytest.mark.parametrize("resolver", ["le t", "le`", "{{ x }}", "le\nfoo: bar", 'le"', "le@file"])
def test_resolver_names_that_could_break_the_file_are_refused(resolver):
    with pytest.raises(RenderError, match="TLS resolver"):
        render(ROUTES, "default", RouterOptions(tls_resolver=resolver))
