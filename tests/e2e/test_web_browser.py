"""The web app in a real browser (headless Debian Chromium driven by Playwright) against the real stack: sign in,
the session survives a reload through the httpOnly refresh cookie that page scripts cannot read, sign out.
Screenshots (360 px and desktop) go to BAGTRACK_SCREENSHOTS (default var/screenshots)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import PASSWORD, bearer, create, login
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


def signed_in_page(chromium, stack, user, width=1280, screen="scan", ready="#scan-input:focus"):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(stack.url() + f"/#/{screen}")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_selector(ready)
    return context, page


def scan(page, code):
    page.keyboard.type(code)  # a keyboard-wedge scanner: the code, then Enter, into whatever has the focus
    page.keyboard.press("Enter")


def bag(gw, admin_token, qr):
    response = gw.get(f"/bags/{qr}", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    return response.json()


def test_a_dispatcher_fills_a_parent_of_30_in_the_scan_station(chromium, stack, gw, admin_token, backend):
    user = create(gw, admin_token, "dispatcher", "indore")
    context, page = signed_in_page(chromium, stack, user, width=360)
    parent = "SB" + user["username"][-5:].translate(str.maketrans("abcdef", "123456"))
    try:
        scan(page, parent)
        page.wait_for_selector("#scan-status:has-text('created')")
        for n in range(30):
            scan(page, f"W{parent}C{n:02d}")
            page.wait_for_selector(f"#scan-count:has-text('{n + 1}/30')")
        page.wait_for_selector("#scan-count:has-text('complete')")
        scan(page, f"W{parent}C99")
        page.wait_for_selector("#scan-status[data-kind=error]")
        assert "full" in page.inner_text("#scan-status").lower()
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"scan-complete-360px-{backend.name}.png"), full_page=True)
        assert bag(gw, admin_token, parent)["child_count"] == 30
    finally:
        context.close()


def test_scans_made_offline_queue_and_land_once_when_the_network_returns(chromium, stack, gw, admin_token, backend):
    user = create(gw, admin_token, "dispatcher", "lucknow")
    context, page = signed_in_page(chromium, stack, user)
    parent = "SB" + user["username"][-5:].translate(str.maketrans("abcdef", "678901"))
    try:
        scan(page, parent)
        page.wait_for_selector("#scan-status:has-text('created')")
        context.set_offline(True)
        for n in range(10):
            scan(page, f"OFF{parent}{n:02d}")
        page.wait_for_selector("#scan-waiting:has-text('10 scans waiting')")
        page.screenshot(path=str(SHOTS / f"scan-offline-1280px-{backend.name}.png"), full_page=True)
        assert bag(gw, admin_token, parent)["child_count"] == 0
        context.set_offline(False)
        page.wait_for_selector("#scan-count:has-text('10/30')", timeout=20000)
        page.wait_for_selector("#scan-waiting:empty", state="attached")
        assert bag(gw, admin_token, parent)["child_count"] == 10
    finally:
        context.close()


def test_a_child_whose_answer_is_lost_after_the_commit_lands_once(chromium, stack, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "jaipur")
    context, page = signed_in_page(chromium, stack, user)
    parent = "SB" + user["username"][-5:].translate(str.maketrans("abcdef", "234567"))
    lost = []

    def lose_the_first_answer(route):
        if not lost:
            route.fetch()  # the server commits...
            lost.append(route.request.post_data)
            route.abort()  # ...and the answer never reaches the page
        else:
            route.continue_()

    try:
        scan(page, parent)
        page.wait_for_selector("#scan-status:has-text('created')")
        page.route("**/api/v1/scans/child", lose_the_first_answer)
        scan(page, f"LOST{parent}")
        page.wait_for_selector("#scan-count:has-text('1/30')")
        page.wait_for_selector(f"#scan-status:has-text('LOST{parent}')", timeout=20000)
        assert lost, "the route handler never saw the scan"
        assert bag(gw, admin_token, parent)["child_count"] == 1
        scans = gw.get("/scans", params={"qr": f"LOST{parent}"}, headers=bearer(admin_token))
        assert len(scans.json()["items"]) == 1, scans.text  # one scan row: the retry replayed the first answer
    finally:
        context.close()


def test_lookup_shows_a_child_with_its_parent_and_errors_in_the_apis_words(chromium, stack, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "ranchi")
    token = login(gw, user["username"]).json()["access_token"]
    parent = "SB" + user["username"][-5:].translate(str.maketrans("abcdef", "345678"))
    auth = bearer(token)
    assert gw.post("/scans/parent", json={"qr_id": parent}, headers=auth).status_code == 200
    assert gw.post("/scans/child", json={"parent_qr": parent, "child_qr": f"LK{parent}"}, headers=auth).status_code == 200
    context, page = signed_in_page(chromium, stack, user, screen="lookup", ready="#lookup-input:focus")
    try:
        scan(page, f"lk{parent}")
        page.wait_for_selector(f"#lookup-result h2:has-text('LK{parent}')")
        result = page.inner_text("#lookup-result")
        assert "Parent" in result and parent in result and "child" in result
        scan(page, f"NONE{parent}")  # a QR nobody scanned: the API's 404 text, shown as an error
        page.wait_for_selector("#lookup-result .error")
    finally:
        context.close()


def test_a_biller_builds_and_completes_a_bill(chromium, stack, gw, admin_token, backend):
    dispatcher = create(gw, admin_token, "dispatcher", "bathinda")
    token = login(gw, dispatcher["username"]).json()["access_token"]
    stem = dispatcher["username"][-4:].translate(str.maketrans("abcdef", "456789"))
    parents = [f"SB{stem}{n}" for n in (1, 2)]
    for qr in parents:
        response = gw.post("/scans/parent", json={"qr_id": qr}, headers=bearer(token))
        assert response.status_code == 200, response.text
    biller = create(gw, admin_token, "biller")
    context, page = signed_in_page(chromium, stack, biller, screen="bills", ready="#bill-form")
    try:
        page.fill("#bill-form input[name=capacity]", "2")
        page.fill("#bill-form input[name=destination]", "Jaipur depot")
        page.click("#bill-form button[type=submit]")
        page.wait_for_selector("#bill-summary")  # the bill is shown and its scan input has the focus
        page.wait_for_selector("#bill-scan:focus")
        scan(page, f"NOPARENT{stem}")  # not a parent QR: refused in the API's own words
        page.wait_for_selector("#bill-status[data-kind=error]")
        for n, qr in enumerate(parents, 1):
            scan(page, qr.lower())
            page.wait_for_selector(f"#bill-summary:has-text('{n}/2')")
        page.click("#bill-complete")
        page.wait_for_selector("#bill-summary:has-text('completed')")
        page.wait_for_selector("#bill-history li")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"bill-completed-1280px-{backend.name}.png"), full_page=True)
        bill_id = page.inner_text("#bill-head h1").removeprefix("Bill ")
        bill = gw.get(f"/bills/{bill_id}", headers=bearer(admin_token)).json()
        assert bill["status"] == "completed" and {b["parent_qr"] for b in bill["bags"]} == set(parents)
    finally:
        context.close()
