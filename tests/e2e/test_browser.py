"""A real browser uses the calculator through Traefik, with `reconcile up` running."""

from __future__ import annotations

from pathlib import Path

import pytest

from up_stack import REPO, UpStack, add_calculator, up  # noqa: F401 - up is a fixture

pytestmark = [pytest.mark.docker, pytest.mark.traefik, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by scripts/setup
ARTIFACTS = REPO / "tests" / "artifacts"


def test_browser_calculates_through_traefik(up: UpStack, instance):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is missing: run scripts/setup"
    add_calculator(up.specs)
    up.traefik.wait_status("calc.localhost", 200, timeout=60, path="/health")
    # Chromium resolves *.localhost to loopback itself: the real URL works as is.
    url = f"http://calc.localhost:{up.web_port}/"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#display")).to_be_visible()
            for key in ("5", "+", "3", "="):
                page.click(f'[data-key="{key}"]')
            expect(page.locator("#display")).to_have_text("8")
            expect(page.locator("#history li").first).to_contain_text("5 + 3 = 8")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "calculator.png"), full_page=True)
        finally:
            browser.close()

    # The browser's calculation went through the API into the sandbox's history.
    items = up.traefik.get("calc.localhost", "/api/history").json()["items"]
    assert [(e["a"], e["op"], e["b"], e["result"]) for e in items] == [(5, "+", 3, 8)]
    assert (ARTIFACTS / "calculator.png").stat().st_size > 0
