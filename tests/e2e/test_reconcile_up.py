"""`reconcile up`: the calculator dropped into specs is live through Traefik; Traefik is supervised."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import time

import pytest
import requests

from helpers import wait_until
from up_stack import (  # noqa: F401 - up is a fixture
    UpStack,
    add_calculator,
    busybox_spec,
    pids_named,
    start_up,
    stop_up,
    up,
)

pytestmark = [pytest.mark.docker, pytest.mark.traefik]

CALC_HOST = "calc.localhost"
START_TIMEOUT = 60  # the first uvicorn start in a fresh container; normally about a second


def owned_containers(docker_client, instance: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"reconciler.instance={instance}"})


def calculate(up: UpStack, a: float, op: str, b: float) -> dict:
    resp = requests.post(f"{up.traefik.web_url}/api/calculate", json={"a": a, "op": op, "b": b},
                         headers={"Host": CALC_HOST}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def history(up: UpStack) -> list[tuple]:
    resp = up.traefik.get(CALC_HOST, "/api/history")
    assert resp.status_code == 200, resp.text
    return [(e["a"], e["op"], e["b"], e["result"]) for e in resp.json()["items"]]


def test_calculator_lifecycle(up: UpStack, docker_client, instance):
    spec = add_calculator(up.specs)
    up.traefik.wait_status(CALC_HOST, 200, timeout=START_TIMEOUT, path="/health")
    # up prints the URL once the sandbox is Ready.
    up.wait_output(f"calculator  http://{CALC_HOST}:{up.web_port}")

    # Traefik itself says the route is live.
    name = f"rc-{instance}-calculator"
    router = up.traefik.router(name)
    assert router["status"] == "enabled" and router["rule"] == f"Host(`{CALC_HOST}`)", router
    service = up.traefik.service(name)
    assert service["status"] == "enabled", service
    assert list(service["serverStatus"].values()) == ["UP"], service

    assert calculate(up, 5, "+", 3)["result"] == 8
    assert calculate(up, 10, "×", 6)["result"] == 60
    assert history(up) == [(10, "*", 6, 60), (5, "+", 3, 8)]

    [before] = owned_containers(docker_client, instance)
    volumes_before = {m["Name"] for m in before.attrs["Mounts"] if m["Type"] == "volume"}
    assert len(volumes_before) == 1, before.attrs["Mounts"]

    # A recreate: a changed env means a new container, on the same named volume.
    spec.write_text(spec.read_text().replace("env: {CALC_DB: /data/history.db}",
                                             "env: {CALC_DB: /data/history.db, GREETING: hello}"))

    def recreated():
        running = [c for c in owned_containers(docker_client, instance) if c.status == "running"]
        return len(running) == 1 and running[0].id != before.id and running[0]

    after = wait_until(recreated, timeout=START_TIMEOUT, message="the calculator to be recreated")
    assert "GREETING=hello" in after.attrs["Config"]["Env"]
    assert {m["Name"] for m in after.attrs["Mounts"] if m["Type"] == "volume"} == volumes_before
    up.traefik.wait_status(CALC_HOST, 200, timeout=START_TIMEOUT, path="/health")
    assert history(up) == [(10, "*", 6, 60), (5, "+", 3, 8)]

    # Deleting the spec removes the route, then the container.
    spec.unlink()
    up.traefik.wait_status(CALC_HOST, 404, timeout=10, path="/health")
    wait_until(lambda: not owned_containers(docker_client, instance), timeout=20,
               message="the calculator container to go away")
    assert up.traefik.router(name) is None
    assert up.proc.poll() is None, up.report()


def test_traefik_killed_comes_back_with_all_routes(up: UpStack, docker_client, instance):
    hosts = {f"kill{i}": f"body-{i}" for i in range(3)}
    for host, body in hosts.items():
        (up.specs / f"{host}.yaml").write_text(busybox_spec(host, host, body))
    for host, body in hosts.items():
        assert up.traefik.wait_status(f"{host}.localhost", 200, timeout=30).text == body + "\n"
    first = up.traefik_pid()

    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    # Acceptance: every route answers again within 5 s of the kill.
    for host, body in hosts.items():
        left = max(0.1, 5 - (time.monotonic() - killed_at))
        assert up.traefik.wait_status(f"{host}.localhost", 200, timeout=left).text == body + "\n"
    second = up.traefik_pid()
    assert second != first
    up.wait_output("Traefik is back")

    # Ctrl-C (SIGINT to the foreground group) stops up and Traefik; sandboxes keep running.
    assert up.signal(signal.SIGINT) == 0, up.report()
    assert not up.api_up()
    assert not pids_named("traefik", parent=up.proc.pid)
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
    running = [c for c in owned_containers(docker_client, instance) if c.status == "running"]
    assert len(running) == len(hosts), [c.name for c in running]
    assert "sandboxes are still running" in up.output()


def test_sigterm_stops_up(up: UpStack):
    pid = up.traefik_pid()
    assert up.signal(signal.SIGTERM) == 0, up.report()
    assert not up.api_up()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def https_get(port: int, host: str, path: str = "/") -> tuple[int, str, bytes]:
    """GET over TLS to 127.0.0.1:``port`` with SNI and Host ``host``, not verifying the
    certificate; returns (status, body, the server's certificate in DER)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            return response.status, response.read().decode(), der


def default_certificate_der(directory) -> bytes:  # noqa: ANN001 - a Path
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from ruamel.yaml import YAML

    from reconciler.default_cert import DEFAULT_CERT_FILE

    data = YAML(typ="safe").load((directory / DEFAULT_CERT_FILE).read_text())
    pem = data["tls"]["stores"]["default"]["defaultCertificate"]["certFile"]
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def test_tls_with_a_certificate_resolver(tmp_path, instance):
    # No ACME here (no internet): a resolver Traefik does not define makes it log an
    # error and serve its default self-signed certificate, which is enough to prove
    # the routers carry tls.certResolver and answer over https.
    stack = start_up(tmp_path, instance, extra=("--tls-resolver", "devcert"))
    try:
        (stack.specs / "secure.yaml").write_text(busybox_spec("secure", "secure", "over-tls"))
        host = "secure.localhost"

        def answers():
            status, body, der = https_get(stack.web_port, host)
            return status == 200 and (body, der)

        body, der = wait_until(answers, timeout=30, message="https through Traefik")
        assert body == "over-tls\n"
        # The certificate served is the one reconciler wrote once into the directory
        # (Traefik's own default one is regenerated, with a new RSA key, on every reload).
        written = default_certificate_der(stack.dynamic_dir)
        assert der == written
        (stack.specs / "second.yaml").write_text(busybox_spec("second", "second", "also-tls"))
        wait_until(lambda: https_get(stack.web_port, "second.localhost")[0] == 200, timeout=30,
                   message="the second sandbox over https")
        assert https_get(stack.web_port, host)[2] == written  # the same after a reload
        router = stack.traefik.router(f"rc-{instance}-secure")
        assert router["status"] == "enabled", router
        assert router["tls"]["certResolver"] == "devcert", router
        # The route is TLS-only: plain http on the same port does not reach it.
        assert stack.traefik.get(host).status_code == 404
        stack.wait_output(f"secure  https://{host}:{stack.web_port}")
    finally:
        stop_up(stack)


def test_a_killed_up_leaves_no_traefik_in_the_way(tmp_path, instance):
    first = start_up(tmp_path, instance)
    try:
        orphan = first.traefik_pid()
        # SIGKILL gives up no chance to stop its Traefik (which has its own session).
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        assert not pids_named("traefik", parent=first.proc.pid)
        os.kill(orphan, 0)  # still running, reparented

        second = start_up(tmp_path, instance)
        try:
            second.wait_output(f"Stopped Traefik pid {orphan}")
            wait_until(lambda: not first.api_up(), timeout=5, message="the orphaned Traefik to stop")
            assert second.traefik_pid() != orphan
            (second.specs / "after.yaml").write_text(busybox_spec("after", "after", "second-up"))
            assert second.traefik.wait_status("after.localhost", 200, timeout=30).text == "second-up\n"
        finally:
            stop_up(second)
    finally:
        stop_up(first)
