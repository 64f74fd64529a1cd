"""The web app in a real browser (headless Debian Chromium driven by Playwright) against the real stack: sign in,
the session survives a reload through the httpOnly refresh cookie that page scripts cannot read, sign out.
Screenshots (360 px and desktop) go to BAGTRACK_SCREENSHOTS (default var/screenshots)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, create
from tests.support import IN_CI

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("BAGTRACK_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("BAGTRACK_SCREENSHOTS", "var/screenshots"))


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        message = f"no Chromium at {CHROMIUM} (scripts/ensure-tools.sh installs Debian's)"
        pytest.fail(message + " (CI=true: the browser tests must run)") if IN_CI else pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_sign_in_reload_and_sign_out_in_a_browser(chromium, stack, gw, admin_token, backend, width):
    user = create(gw, admin_token, "dispatcher", "raipur")
    context = chromium.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    try:
        page.goto(stack.url() + "/")
        page.fill("input[name=username]", user["username"])
        page.fill("input[name=password]", "wrong" + PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_selector("#login-error:not(:empty)")
        assert "invalid" in page.inner_text("#login-error").lower()
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_selector(f"#who:has-text('{user['username']}')")
        page.wait_for_selector("#reference dd")
        assert "raipur" in page.inner_text("#reference")
        assert "bagtrack_refresh" not in page.evaluate("document.cookie")  # httpOnly: not readable by scripts
        assert "bagtrack_refresh" in {c["name"] for c in context.cookies()}
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"home-{width}px-{backend.name}.png"), full_page=True)
        page.reload()  # the access token was in memory only: the cookie refresh restores the session
        page.wait_for_selector(f"#who:has-text('{user['username']}')")
        page.click("#who button")
        page.wait_for_selector("#login:not([hidden])")
        assert "bagtrack_refresh" not in {c["name"] for c in context.cookies()}
        page.reload()
        page.wait_for_selector("#login:not([hidden])")
    finally:
        context.close()
