"""The real Traefik binary run by reconciler.traefik_proc, and what its file provider accepts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from ruamel.yaml import YAML

from helpers import TraefikHandle, free_port, wait_until
from reconciler.traefik_proc import (
    TraefikOptions,
    start_traefik,
    stop_traefik,
    traefik_args,
    traefik_binary,
    wait_ready,
)

pytestmark = pytest.mark.traefik

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "reconciler-test/busybox:latest"


def route_yaml(name: str, host: str, url: str) -> str:
    return (
        "http:\n"
        "  routers:\n"
        f"    {name}:\n"
        f"      rule: \"Host(`{host}`)\"\n"
        "      entryPoints: [web]\n"
        f"      service: {name}\n"
        "  services:\n"
        f"    {name}:\n"
        "      loadBalancer:\n"
        "        servers:\n"
        f"          - url: \"{url}\"\n"
    )


def error_lines(t: TraefikHandle) -> list[str]:
    return [line for line in t.log_file.read_text(errors="replace").splitlines() if " ERR " in line]


def settle(t: TraefikHandle) -> None:
    """Give the file provider time to (re)load: throttle 100 ms, plus slack."""
    time.sleep(0.5)


@pytest.fixture
def http_server(tmp_path: Path):
    """``python3 -m http.server`` on a free loopback port, serving one index.html."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hello-from-http-server\n")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok, timeout=10,
                   message="http.server up")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_binary_found():
    assert os.access(traefik_binary(), os.X_OK)


def test_ping(traefik):
    resp = requests.get(traefik.api_url + "/ping", timeout=2)
    assert (resp.status_code, resp.text) == (200, "OK")
    # The API and /ping live on the loopback "traefik" entrypoint only.
    assert traefik.get("anything", "/ping").status_code == 404
    assert requests.get(traefik.api_url + "/api/http/routers", timeout=2).status_code == 200


def test_route_served_then_removed(traefik, http_server):
    assert traefik.get("hello.test").status_code == 404
    traefik.write("routes.yml", route_yaml("hello", "hello.test", http_server))
    resp = traefik.wait_status("hello.test", 200)
    assert resp.text == "hello-from-http-server\n"
    assert traefik.get("other.test").status_code == 404  # exact Host match only
    router = traefik.router("hello")
    assert router is not None and router["status"] == "enabled", router
    assert router["rule"] == "Host(`hello.test`)"
    service = traefik.service("hello")
    assert service is not None and service["status"] == "enabled", service

    traefik.remove("routes.yml")
    traefik.wait_status("hello.test", 404)
    wait_until(lambda: traefik.router("hello") is None, timeout=5, message="router gone from API")
    assert error_lines(traefik) == []


def test_route_to_busybox_container(traefik, docker_client, instance):
    port = free_port()
    container = docker_client.containers.create(
        BUSYBOX, ["sh", "-c", "echo hello-from-busybox > /www/index.html && exec httpd -f -p 8000 -h /www"],
        name=f"{instance}-web", ports={"8000/tcp": ("127.0.0.1", port)}, init=True,
    )
    container.start()
    traefik.write("routes.yml", route_yaml("bb", "bb.test", f"http://127.0.0.1:{port}"))
    assert traefik.wait_status("bb.test", 200).text == "hello-from-busybox\n"
    assert traefik.router("bb")["status"] == "enabled"


def test_empty_dynamic_dir_is_fine(traefik):
    settle(traefik)
    assert list(traefik.dynamic_dir.iterdir()) == []
    assert traefik.get("hello.test").status_code == 404
    assert error_lines(traefik) == []


@pytest.mark.parametrize("content", ["", "# no routes\n"])
def test_empty_or_comment_only_file_is_fine_and_clears_routes(traefik, http_server, content):
    traefik.write("routes.yml", route_yaml("hello", "hello.test", http_server))
    traefik.wait_status("hello.test", 200)
    traefik.write("routes.yml", content)
    traefik.wait_status("hello.test", 404)
    assert traefik.router("hello") is None
    assert error_lines(traefik) == []


@pytest.mark.parametrize("content", ["http: {}\n", "http:\n  routers: {}\n  services: {}\n"])
def test_empty_http_maps_are_rejected_and_old_routes_stay(traefik, http_server, content):
    # Observed with Traefik 3.7: an empty `http` (or empty `routers`/`services`)
    # map is an error ("... cannot be a standalone element"), and while running
    # Traefik keeps the previous configuration, so removed routes stay live.
    # A renderer with no routes must write an empty/comment-only file instead.
    traefik.write("routes.yml", route_yaml("hello", "hello.test", http_server))
    traefik.wait_status("hello.test", 200)
    traefik.write("routes.yml", content)
    wait_until(lambda: error_lines(traefik), timeout=5, message="Traefik to log the error")
    assert "cannot be a standalone element" in error_lines(traefik)[-1]
    assert traefik.get("hello.test").status_code == 200


def test_stop_leaves_no_process(tmp_path):
    opts = TraefikOptions(dynamic_dir=tmp_path / "dynamic", web_address=f"127.0.0.1:{free_port()}",
                          api_address=f"127.0.0.1:{free_port()}", log_file=tmp_path / "traefik.log")
    proc = start_traefik(opts)
    wait_ready(opts.api_address, proc=proc)
    assert os.getpgid(proc.pid) == proc.pid  # its own process group
    started = time.monotonic()
    code = stop_traefik(proc)
    assert time.monotonic() - started < 5
    assert code == 0, (tmp_path / "traefik.log").read_text()
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{opts.api_address}/ping", timeout=1)


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}".lower()
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = "true" if value in ({}, True) else str(value).lower()
    return flat


def test_traefik_yml_matches_flags():
    """traefik/traefik.yml and traefik_args() must say the same things."""
    yml = _flatten(YAML(typ="safe").load((REPO / "traefik/traefik.yml").read_text()))
    flags = dict(arg[2:].split("=", 1) for arg in traefik_args(TraefikOptions(dynamic_dir=REPO / "traefik/dynamic")))
    flags = {k.lower(): v.lower() for k, v in flags.items()}
    yml["providers.file.directory"] = str((REPO / yml["providers.file.directory"]).resolve()).lower()
    # Flags that only exist on the command line: the section switches and the
    # explicit default ping entrypoint.
    only_flags = {"api", "ping.entrypoint"}
    assert {k: v for k, v in flags.items() if k not in only_flags} == yml


def test_traefik_yml_runs(tmp_path, http_server):
    """The real binary accepts traefik/traefik.yml (ports and directory moved aside)."""
    config = YAML(typ="safe").load((REPO / "traefik/traefik.yml").read_text())
    web, api = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config["entryPoints"]["web"]["address"] = web
    config["entryPoints"]["traefik"]["address"] = api
    dynamic = tmp_path / "dynamic"
    dynamic.mkdir()
    config["providers"]["file"]["directory"] = str(dynamic)
    (dynamic / "routes.yml").write_text(route_yaml("hello", "hello.test", http_server))
    static = tmp_path / "traefik.yml"
    YAML(typ="safe").dump(config, static)
    log = tmp_path / "traefik.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([traefik_binary(), f"--configfile={static}"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(api, proc=proc)
        t = TraefikHandle(proc, int(web.rsplit(":", 1)[1]), int(api.rsplit(":", 1)[1]), dynamic, log)
        assert t.wait_status("hello.test", 200).text == "hello-from-http-server\n"
        assert t.router("hello")["status"] == "enabled"
        assert error_lines(t) == []
    finally:
        assert stop_traefik(proc) == 0
