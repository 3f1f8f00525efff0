"""Acceptance 5 with the real Traefik watching the rendered directory: a sandbox is served
at its hostname, its router is enabled, and after its spec is deleted and applied: 404."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core_helpers import Reconcile, httpd_spec
from helpers import TraefikHandle, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.traefik]


def errors_in_log(traefik: TraefikHandle) -> list[str]:
    return [line for line in traefik.log_file.read_text(errors="replace").splitlines() if " ERR " in line]


def test_routed_at_its_hostname_then_404_after_delete(tmp_path: Path, instance: str, traefik: TraefikHandle) -> None:
    rc = Reconcile(tmp_path, instance, traefik_dir=traefik.dynamic_dir, web_port=traefik.web_port)
    router = f"rc-{instance}-web"
    host = "qa-web.localhost"

    # First an apply with nothing to route: the rendered file must be one Traefik accepts.
    rc.expect(0, "apply")
    assert rc.dynamic_file.is_file()
    time.sleep(0.5)  # the file provider's throttle is 100 ms
    assert errors_in_log(traefik) == []

    rc.write("web.yaml", httpd_spec("web", page="<h1>routed by traefik</h1>\n", extra="  hostname: qa-web\n"))
    rc.write("other.yaml", httpd_spec("other"))
    rc.expect(0, "apply")
    assert rc.expect(0, "url", "web") == f"http://{host}:{traefik.web_port}\n"
    resp = traefik.wait_status(host, 200)
    assert resp.text == "<h1>routed by traefik</h1>\n"
    info = traefik.router(router)
    assert info is not None and info["status"] == "enabled", info
    assert info["rule"] == f"Host(`{host}`)"
    assert info["entryPoints"] == ["web"]
    assert traefik.service(router)["status"] == "enabled"
    assert traefik.get("qa-webx.localhost").status_code == 404  # exact Host match only

    rc.remove("web.yaml")
    rc.expect(0, "apply")
    traefik.wait_status(host, 404)
    wait_until(lambda: traefik.router(router) is None, timeout=5, message="router gone from the API")
    # The other sandbox kept its route through the change.
    assert traefik.router(f"rc-{instance}-other")["status"] == "enabled"

    rc.remove("other.yaml")
    rc.expect(0, "apply")  # the last route goes: an empty file, not an invalid one
    wait_until(lambda: traefik.router(f"rc-{instance}-other") is None, timeout=5, message="last router gone")
    assert errors_in_log(traefik) == []


def test_routes_written_after_an_empty_file_still_work(tmp_path: Path, instance: str, traefik: TraefikHandle) -> None:
    rc = Reconcile(tmp_path, instance, traefik_dir=traefik.dynamic_dir, web_port=traefik.web_port)
    rc.expect(0, "apply")  # no specs: the empty rendering
    time.sleep(0.5)
    assert errors_in_log(traefik) == []
    rc.write("web.yaml", httpd_spec("web", extra="  hostname: qa-late\n"))
    rc.expect(0, "apply")
    assert traefik.wait_status("qa-late.localhost", 200).text == "hello from web\n"
    assert errors_in_log(traefik) == []
