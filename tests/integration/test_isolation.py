"""Acceptance 6: sandbox A cannot open a TCP connection to sandbox B, while the host
(where Traefik runs) reaches both at their container addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_helpers import Reconcile, httpd_spec, ip_of, owned, page

pytestmark = pytest.mark.docker


def http_from(docker_client, container_id: str, address: str) -> tuple[int, str]:  # noqa: ANN001
    """(exit code, last line) of an HTTP GET to ``address``:8000 made inside the container.

    nc, not wget: Debian's static busybox 1.35 wget segfaults (exit 139) on any URL.
    ``nc -w 2`` fails when the TCP connection cannot be opened within 2 s.
    """
    script = f'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 {address} 8000'
    result = docker_client.containers.get(container_id).exec_run(["sh", "-c", script])
    lines = result.output.decode(errors="replace").strip().splitlines()
    return result.exit_code, lines[-1] if lines else ""


def test_sandboxes_cannot_reach_each_other(tmp_path: Path, instance: str, docker_client) -> None:
    rc = Reconcile(tmp_path, instance)
    rc.write("a.yaml", httpd_spec("a"))
    rc.write("b.yaml", httpd_spec("b"))
    rc.expect(0, "apply")
    sandboxes = owned(docker_client, instance)
    a, b = sandboxes["a"], sandboxes["b"]
    ip_a, ip_b = ip_of(a, instance), ip_of(b, instance)
    assert ip_a != ip_b

    # The host reaches both: that is how Traefik routes to them.
    assert page(ip_a) == "hello from a\n"
    assert page(ip_b) == "hello from b\n"

    # The same request from inside A works against A itself, so a failure below is the network's doing.
    assert http_from(docker_client, a["Id"], ip_a) == (0, "hello from a")
    code, out = http_from(docker_client, a["Id"], ip_b)
    assert code != 0 and "hello from b" not in out, f"A reached B: {out!r}"
    code, out = http_from(docker_client, b["Id"], ip_a)
    assert code != 0 and "hello from a" not in out, f"B reached A: {out!r}"
    # Nor by name: the sandboxes share no network, so there is nothing to resolve.
    code, out = http_from(docker_client, a["Id"], f"rc-{instance}-b")
    assert code != 0 and "hello from b" not in out
