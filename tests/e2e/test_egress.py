"""``egress: false``: the sandbox can open no connection out, yet it still
answers through the real Traefik.

The peer is a test container ``<instance>-peer`` on a network of its own
(``<instance>-peer``, not internal), serving HTTP on its address and on a port
published on that network's gateway, the host side of its bridge. A sandbox
with egress reaches the published port (so the path exists, and the probe
command works); the same command from a sandbox without egress fails, to
either address."""

from __future__ import annotations

import pytest

import requests

from helpers import free_port, wait_until
from ops_helpers import BUSYBOX, make_place

pytestmark = [pytest.mark.docker, pytest.mark.traefik]


def probe(place, name: str, host: str, port: int) -> tuple[int, str]:
    """An HTTP GET from inside sandbox ``name`` (busybox nc, 2 s timeout)."""
    result = place.run("exec", name, "--", "sh", "-c",
                       f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} {port}")
    return result.returncode, result.stdout


@pytest.fixture
def peer(docker_client, instance: str):
    """``<instance>-peer``: httpd on its own bridge network, port published on the gateway."""
    api = docker_client.api
    network = f"{instance}-peer"
    # Labelled with the instance (and not as managed), so the fixture cleans it
    # up and the reconciler never treats it as its own.
    api.create_network(network, driver="bridge", labels={"reconciler.instance": instance})
    gateway = api.inspect_network(network)["IPAM"]["Config"][0]["Gateway"]
    port = free_port()
    container = api.create_container(
        BUSYBOX, ["sh", "-c", "mkdir -p /www && echo peer-says-hi > /www/index.html && exec httpd -f -p 80 -h /www"],
        name=f"{instance}-peer", ports=[80],
        host_config=api.create_host_config(network_mode=network, port_bindings={80: (gateway, port)}, init=True),
    )["Id"]
    api.start(container)
    ip = api.inspect_container(container)["NetworkSettings"]["Networks"][network]["IPAddress"]
    # Serving before the test starts (this machine reaches the gateway address).
    wait_until(lambda: requests.get(f"http://{gateway}:{port}/", timeout=2).text == "peer-says-hi\n", 20,
               message="the peer to serve")
    return {"ip": ip, "gateway": gateway, "port": port, "container": container}


def test_no_egress_cannot_connect_out_but_answers_through_traefik(tmp_path, instance, traefik, peer, docker_client):
    place = make_place(tmp_path, instance, traefik)
    closed_url = place.new("closed", "--no-egress")
    open_url = place.new("open")

    # The control: with egress, the peer's published port answers, and the probe command works.
    wait_until(lambda: "peer-says-hi" in probe(place, "open", peer["gateway"], peer["port"])[1], 20,
               message="the sandbox with egress to reach the peer")
    # Without egress: nothing out, not the published port, not the peer's own address.
    for host, port in ((peer["gateway"], peer["port"]), (peer["ip"], 80)):
        code, out = probe(place, "closed", host, port)
        assert code != 0 and "peer-says-hi" not in out, (host, port, out)

    # Its network really is internal, and it still serves through Traefik.
    net = docker_client.api.inspect_network(f"rc-{instance}-closed")
    assert net["Internal"] is True
    assert docker_client.api.inspect_network(f"rc-{instance}-open")["Internal"] is False
    for url in (closed_url, open_url):
        host = url.split("//", 1)[1].split(":", 1)[0]
        assert traefik.wait_status(host, 200).text == "hello\n"
