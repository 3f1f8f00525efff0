"""Rendering and writing the Traefik dynamic config (TLS options: test_traefik_tls_render.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.default_cert import DEFAULT_CERT_FILE
from reconciler import labels as L
from reconciler.observed import ObservedSandbox
from reconciler.traefik import (
    DYNAMIC_FILE,
    RenderError,
    Route,
    RouterOptions,
    dynamic_filename,
    publish,
    render,
    routes_for,
    write_atomic,
)

ROUTES = [
    Route(name="rc-default-api", host="qa-0123456789ab.localhost", url="http://10.213.0.18:8080"),
    Route(name="rc-default-calc", host="calc.localhost", url="http://10.213.0.2:8000"),
]


def parse(text: str):  # noqa: ANN201
    return YAML(typ="safe").load(text)


def test_one_router_and_one_service_per_route() -> None:
    text = render(ROUTES, "default")
    assert "{{" not in text and "}}" not in text
    http = parse(text)["http"]
    assert set(http) == {"routers", "services"}
    assert set(http["routers"]) == set(http["services"]) == {"rc-default-api", "rc-default-calc"}
    assert http["routers"]["rc-default-calc"] == {
        "rule": "Host(`calc.localhost`)",
        "entryPoints": ["web"],
        "service": "rc-default-calc",
    }
    assert http["services"]["rc-default-calc"] == {
        "loadBalancer": {"passHostHeader": True, "servers": [{"url": "http://10.213.0.2:8000"}]}
    }
    assert http["routers"]["rc-default-api"]["rule"] == "Host(`qa-0123456789ab.localhost`)"


def test_entrypoint_is_configurable() -> None:
    http = parse(render(ROUTES, "default", RouterOptions(entrypoint="websecure")))["http"]
    assert {r["entryPoints"][0] for r in http["routers"].values()} == {"websecure"}


def test_tls_resolver_is_rendered_when_set() -> None:
    http = parse(render(ROUTES[:1], "default", RouterOptions(tls_resolver="le")))["http"]
    assert http["routers"]["rc-default-api"]["tls"] == {"certResolver": "le"}


def test_no_routes_renders_no_http_map_at_all() -> None:
    # Traefik 3 rejects "http: {}" (and empty routers/services maps) and then
    # keeps serving the previous routes: the empty file must be comments only.
    text = render([], "default")
    assert parse(text) is None
    assert "{{" not in text and "http" not in [line.split(":")[0] for line in text.splitlines()]


def test_routes_for_running_sandboxes_with_port_address_and_hostname() -> None:
    def sandbox(name: str, state: str = "running", ip: str | None = "10.213.0.2", port: str | None = "8000",
                hostname: str | None = "qa-x") -> ObservedSandbox:
        labels = {L.SANDBOX: name}
        if port:
            labels[L.PORT] = port
        if hostname:
            labels[L.HOSTNAME] = hostname
        return ObservedSandbox(name, "id", f"rc-i-{name}", state, labels, ip=ip)

    routes = routes_for(
        [
            sandbox("b", hostname="qa-b"),
            sandbox("a", hostname="qa-a", ip="10.213.0.18"),
            sandbox("stopped", state="exited"),
            sandbox("noport", port=None),
            sandbox("noip", ip=None),
            sandbox("nohost", hostname=None),
        ],
        "inst",
        "example.com",
    )
    assert routes == [
        Route("rc-inst-a", "qa-a.example.com", "http://10.213.0.18:8000"),
        Route("rc-inst-b", "qa-b.example.com", "http://10.213.0.2:8000"),
    ]


HOSTILE = ["a{{x}}", "a}}", 'a"b', "a'b", "a\nb: c", "a`b", "a b", "a@file", "a\\b", "{{ .Env.HOME }}"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_route_name_is_refused(value: str) -> None:
    with pytest.raises(RenderError, match="router name"):
        render([Route(value, "a.localhost", "http://10.0.0.1:80")], "default")


@pytest.mark.parametrize("value", [*HOSTILE, "a.localhost`) || Host(`b.localhost", "A.localhost", ""])
def test_hostile_host_is_refused(value: str) -> None:
    with pytest.raises(RenderError, match="host"):
        render([Route("ok", value, "http://10.0.0.1:80")], "default")


@pytest.mark.parametrize(
    "value",
    ["http://10.0.0.1:80/{{x}}", "http://10.0.0.1:80/}}", 'http://10.0.0.1:80/"', "http://10.0.0.1:80/\nx: y",
     "http://10.0.0.1:80/`", "file:///etc/passwd", "http://a b", "10.0.0.1:80"],
)
def test_hostile_url_is_refused(value: str) -> None:
    with pytest.raises(RenderError, match="server url"):
        render([Route("ok", "a.localhost", value)], "default")


@pytest.mark.parametrize("instance", ["x{{y", "x}}y"])
def test_template_markers_anywhere_are_refused(instance: str) -> None:
    # The instance appears only in a comment: Traefik's Go templating reads comments too.
    with pytest.raises(RenderError, match="'{{' or '}}'"):
        render(ROUTES, instance)


@pytest.mark.parametrize("entrypoint", ["web secure", "web`", "{{x}}", 'w"'])
def test_hostile_entrypoint_is_refused(entrypoint: str) -> None:
    with pytest.raises(RenderError, match="entrypoint"):
        render(ROUTES, "default", RouterOptions(entrypoint=entrypoint))


def test_refused_render_writes_nothing(tmp_path: Path) -> None:
    bad = [*ROUTES, Route("x", "a`b.localhost", "http://10.0.0.1:80")]
    with pytest.raises(RenderError):
        publish(tmp_path, bad, "default")
    assert list(tmp_path.iterdir()) == []
    assert publish(tmp_path, ROUTES, "default") is True
    good = (tmp_path / DYNAMIC_FILE).read_text()
    with pytest.raises(RenderError):
        publish(tmp_path, bad, "default")
    assert (tmp_path / DYNAMIC_FILE).read_text() == good  # the last good file stays
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([DYNAMIC_FILE, DEFAULT_CERT_FILE])


def test_write_atomic_skips_an_unchanged_write(tmp_path: Path) -> None:
    text = render(ROUTES, "default")
    assert write_atomic(tmp_path, text) is True
    target = tmp_path / DYNAMIC_FILE
    old = 1_600_000_000_000_000_000
    os.utime(target, ns=(old, old))
    inode = target.stat().st_ino
    assert write_atomic(tmp_path, text) is False
    assert target.stat().st_mtime_ns == old and target.stat().st_ino == inode
    assert write_atomic(tmp_path, render(ROUTES[:1], "default")) is True
    assert target.stat().st_mtime_ns != old
    assert target.stat().st_ino != inode  # replaced, never rewritten in place
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_write_atomic_uses_a_temp_name_traefik_does_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str, dst: str) -> None:
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    assert write_atomic(tmp_path, render(ROUTES, "default"), "dynamic-conf-other.yml") is True
    [(src, dst)] = replaced
    assert dst == str(tmp_path / "dynamic-conf-other.yml")
    assert Path(src).parent == tmp_path  # same directory: the rename is atomic
    assert not src.endswith((".yml", ".yaml", ".toml"))  # Traefik's directory loader skips it
    assert [p.name for p in tmp_path.iterdir()] == ["dynamic-conf-other.yml"]


def test_each_instance_writes_its_own_file() -> None:
    assert dynamic_filename("default") == "dynamic-conf.yml"
    assert dynamic_filename("t1234") == "dynamic-conf-t1234.yml"


def test_many_routes_render_and_validate() -> None:
    routes = [Route(f"rc-default-s{i}", f"qa-s{i}.localhost", f"http://10.213.{i // 16}.{i % 16 + 2}:8000")
              for i in range(100)]
    http = parse(render(routes, "default"))["http"]
    assert len(http["routers"]) == len(http["services"]) == 100


def test_health_path_becomes_a_traefik_health_check() -> None:
    routes = [
        Route("rc-x-a", "a.localhost", "http://10.213.0.2:8000", health_path="/health"),
        Route("rc-x-b", "b.localhost", "http://10.213.0.18:8000"),
    ]
    services = parse(render(routes, "x"))["http"]["services"]
    assert services["rc-x-a"]["loadBalancer"]["healthCheck"] == {"path": "/health", "interval": "5s", "timeout": "2s"}
    assert "healthCheck" not in services["rc-x-b"]["loadBalancer"]


@pytest.mark.parametrize("path", ["health", "/a b", "/{{x}}", "/\"q"])
def test_hostile_health_path_is_refused(path: str) -> None:
    with pytest.raises(RenderError):
        render([Route("rc-x-a", "a.localhost", "http://10.213.0.2:8000", health_path=path)], "x")
