"""A real browser uses the dashboard through Traefik, with `reconcile up` running."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import free_port, wait_until
from up_stack import REPO, busybox_spec, start_up, stop_up

pytestmark = [pytest.mark.docker, pytest.mark.traefik, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/setup
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "browser-test-token-0123456789"


def test_dashboard_shows_a_new_sandbox_and_extends_its_ttl(tmp_path: Path, instance: str):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is missing: run scripts/setup"
    stack = start_up(tmp_path, instance, extra=("--dashboard-port", str(free_port())),
                     env={"RECONCILER_ADMIN_TOKEN": TOKEN})
    try:
        host = f"reconciler-{instance}.localhost"  # not the default instance: its own name
        stack.traefik.wait_status(host, 200, path="/healthz", timeout=15)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                # The token travels in the fragment: never sent to a server, kept in sessionStorage.
                page.goto(f"http://{host}:{stack.web_port}/#token={TOKEN}")
                expect(page.locator("#token-state")).to_have_text("token set")
                expect(page.locator("#empty")).to_be_visible()

                spec = busybox_spec("web", f"web-{instance}", "hello").replace(
                    "  port: 8080\n", "  port: 8080\n  ttl: 10m\n")
                (stack.specs / "web.yaml").write_text(spec)
                row = page.locator('#sandboxes tr[data-name="web"]')
                expect(row.locator(".badge")).to_have_text("ready", timeout=20_000)
                expect(row.locator("td.url a")).to_have_attribute("href", f"http://web-{instance}.localhost:{stack.web_port}")
                expect(row.locator("td.image")).to_have_text("reconciler-test/busybox:latest")
                ttl = row.locator("td.ttl")
                expect(ttl).to_contain_text("m")  # counting down from 10m
                before = float(ttl.get_attribute("data-expires"))

                row.locator("select.extend-by").select_option("3600")
                row.locator("button.extend").click()
                expect(page.locator("#notice")).to_contain_text("now expires at")
                after = wait_until(
                    lambda: (v := float(ttl.get_attribute("data-expires") or 0)) > before + 1 and v,
                    timeout=10, message="the new expiry on the page")
                assert after == pytest.approx(before + 3600, abs=0.01)
                expect(ttl).to_contain_text("1h")
                expect(page.locator('#events li[data-kind="extended"]')).to_have_count(1, timeout=5_000)
                expect(page.locator("#plan")).to_contain_text("No changes")

                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                browser.close()
        assert (ARTIFACTS / "dashboard.png").stat().st_size > 0
        # The page's write went through Traefik to the dashboard, and into the state store.
        status = stack.traefik.get(host, "/api/sandboxes/web").json()
        assert status["expires_at"] == pytest.approx(after, abs=0.01)
    finally:
        stop_up(stack)
