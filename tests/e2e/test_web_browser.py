"""The web app in a real browser (headless Debian Chromium driven by Playwright) against the real stack: sign in,
the session survives a reload through the httpOnly refresh cookie that page scripts cannot read, sign out.
Screenshots (360 px and desktop) go to BAGTRACK_SCREENSHOTS (default var/screenshots)."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN, PASSWORD, bearer, create, login, new_name
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
    loaded = []
    page.on("requestfinished", lambda request: loaded.append(request))
    try:
        page.goto(stack.url() + "/")
        page.wait_for_selector("input[name=username]:focus")
        # The first screen: everything from the project's own origin (it works on a LAN without internet), under
        # 200 KB transferred, and no chart code until the dashboard is opened.
        assert loaded and all(r.url.startswith(stack.url() + "/") for r in loaded), [r.url for r in loaded]
        transferred = sum(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"] for r in loaded)
        assert transferred < 200_000, transferred
        assert not [r.url for r in loaded if r.url.endswith(("/trends.js", "/dashboard.js"))]
        print(f"first screen: {len(loaded)} requests, {transferred} bytes transferred")
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


def signed_in_page(chromium, stack, user, width=1280, screen="scan", ready="#scan-input:focus", password=PASSWORD):
    context = chromium.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(stack.url() + f"/#/{screen}")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", password)
    page.press("input[name=password]", "Enter")
    page.wait_for_selector(ready)
    return context, page


def digits(user, n, key):
    """n digits of a (random, hex) username, its a-f mapped through `key`: QR codes no other test makes."""
    return user["username"][-n:].translate(str.maketrans("abcdef", key))


def stored_scans(page, user) -> int:
    return page.evaluate(f"JSON.parse(localStorage.getItem('bagtrack.queue.{user['id']}') || '[]').length")


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
    parent = "SB" + digits(user, 5, "123456")
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
    parent = "SB" + digits(user, 5, "678901")
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
    parent = "SB" + digits(user, 5, "234567")
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
    parent = "SB" + digits(user, 5, "345678")
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
    stem = digits(dispatcher, 4, "456789")
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


def test_a_conflict_is_flagged_in_the_apis_words_for_the_worker_to_discard(chromium, stack, gw, admin_token, backend):
    other = create(gw, admin_token, "dispatcher", "akola")
    token = login(gw, other["username"]).json()["access_token"]
    stem = digits(other, 4, "567890")
    taken, mine, child = f"SB{stem}1", f"SB{stem}2", f"TAKEN{stem}"
    assert gw.post("/scans/parent", json={"qr_id": taken}, headers=bearer(token)).status_code == 200
    assert gw.post("/scans/child", json={"parent_qr": taken, "child_qr": child}, headers=bearer(token)).status_code == 200
    user = create(gw, admin_token, "dispatcher", "akola")
    context, page = signed_in_page(chromium, stack, user)
    try:
        scan(page, "??")  # not a bag QR at all: refused on the spot, nothing queued
        page.wait_for_selector("#scan-status[data-kind=error]:has-text('not a bag QR')")
        scan(page, mine)
        page.wait_for_selector("#scan-status:has-text('created')")
        scan(page, child)  # already on another parent: the API's 409, flagged with its own words
        page.wait_for_selector("#scan-flagged li[data-state=conflict]")
        flagged = page.inner_text("#scan-flagged")
        assert child in flagged and taken in page.inner_text("#scan-status"), flagged
        assert stored_scans(page, user) == 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"scan-conflict-1280px-{backend.name}.png"), full_page=True)
        page.click("#scan-flagged li[data-state=conflict] button:has-text('Discard')")
        page.wait_for_selector("#scan-flagged li", state="detached")
        assert stored_scans(page, user) == 0
        page.wait_for_selector("#scan-input:focus")  # the worker goes on scanning without touching the screen
        assert bag(gw, admin_token, child)["parent_qr"] == taken
    finally:
        context.close()


def test_queued_scans_survive_a_reload_and_land_once(chromium, stack, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "hisar")
    context, page = signed_in_page(chromium, stack, user)
    parent = "SB" + digits(user, 5, "789012")
    try:
        context.set_offline(True)
        scan(page, parent)
        for n in range(3):
            scan(page, f"RL{parent}{n}")
        page.wait_for_selector("#scan-waiting:has-text('4 scans waiting')")
        # The network comes back but the scan API does not answer yet: the reload must find the queue in storage.
        page.route("**/api/v1/scans/parent", lambda route: route.abort())
        page.route("**/api/v1/scans/child", lambda route: route.abort())
        context.set_offline(False)
        page.reload()
        page.wait_for_selector("#scan-waiting:has-text('4 scans waiting')")
        page.unroute("**/api/v1/scans/parent")
        page.unroute("**/api/v1/scans/child")
        page.wait_for_selector("#scan-count:has-text('3/30')", timeout=20000)
        page.wait_for_selector("#scan-waiting:empty", state="attached")
        assert bag(gw, admin_token, parent)["child_count"] == 3
        scans = gw.get("/scans", params={"qr": parent}, headers=bearer(admin_token)).json()["items"]
        assert len([s for s in scans if s["kind"] == "parent"]) == 1, scans
    finally:
        context.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_the_dashboard_shows_a_new_scan_live(chromium, stack, gw, admin_token, backend, width):
    biller = create(gw, admin_token, "biller")
    dispatcher = create(gw, admin_token, "dispatcher", "sangaria")
    token = login(gw, dispatcher["username"]).json()["access_token"]
    parent = "SB" + digits(dispatcher, 5, "890123")
    context, page = signed_in_page(chromium, stack, biller, width=width, screen="dashboard",
                                   ready="#dash-live[data-state=live]")
    try:
        page.wait_for_selector("#dash-stats dd")
        page.wait_for_selector("#dash-trends svg.chart")
        assert gw.post("/scans/parent", json={"qr_id": parent}, headers=bearer(token)).status_code == 200
        # The stream brings it: no reload, no polling by the page.
        page.wait_for_selector(f"#dash-scans li:has-text('{parent}')", timeout=15000)
        assert dispatcher["username"] in page.inner_text("#dash-scans")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"dashboard-{width}px-{backend.name}.png"), full_page=True)
        # Leaving the screen closes the stream (the screen's unmount): no request is left reading it.
        page.click("nav a:has-text('Lookup')")
        page.wait_for_selector("#lookup-input:focus")
    finally:
        context.close()


def test_an_admin_creates_a_user_sees_errors_and_unlocks_a_locked_account(chromium, stack, gw, admin_token, backend):
    admin = {"username": ADMIN[0]}
    context, page = signed_in_page(chromium, stack, admin, screen="admin", ready="#user-form", password=ADMIN[1])
    name = new_name("web")
    try:
        form = "#user-form"
        page.fill(f"{form} input[name=username]", name)
        page.fill(f"{form} input[name=email]", f"{name}@example.com")
        page.fill(f"{form} input[name=password]", "short")  # the password rule, in the API's words
        page.select_option(f"{form} select[name=role]", "dispatcher")
        page.select_option(f"{form} select[name=dispatch_area]", "raipur")
        page.click(f"{form} button[type=submit]")
        page.wait_for_selector("#admin-message[data-kind=error]")
        page.fill(f"{form} input[name=username]", name)
        page.fill(f"{form} input[name=email]", f"{name}@example.com")
        page.fill(f"{form} input[name=password]", PASSWORD)
        page.select_option(f"{form} select[name=role]", "dispatcher")
        page.select_option(f"{form} select[name=dispatch_area]", "raipur")
        page.click(f"{form} button[type=submit]")
        page.wait_for_selector(f"#admin-message[data-kind=ok]:has-text('Created {name}')")
        page.wait_for_selector(f"#user-list tr[data-username='{name}']")
        assert login(gw, name).status_code == 200
        for _ in range(3):  # AUTH_LOCKOUT_THRESHOLD=3 in the e2e stack
            assert login(gw, name, "wrong" + PASSWORD).status_code == 401
        assert login(gw, name).status_code == 401  # locked: the right password no longer opens it
        page.click("#user-filter button[type=submit]")
        row = f"#user-list tr[data-username='{name}']"
        page.wait_for_selector(f"{row} td:has-text('locked until')")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"admin-locked-1280px-{backend.name}.png"), full_page=True)
        page.click(f"{row} button.unlock")
        page.wait_for_selector(f"#admin-message:has-text('{name}: unlocked')")
        assert login(gw, name).status_code == 200
        page.select_option(f"{row} select[aria-label='role of {name}']", "biller")
        page.click(f"{row} button:has-text('Save')")
        page.wait_for_selector(f"#admin-message:has-text('{name}: saved')")
        users = gw.get("/users", params={"q": name}, headers=bearer(admin_token)).json()["items"]
        assert [u["role"] for u in users] == ["biller"], users
    finally:
        context.close()


def test_a_worker_gets_around_by_keyboard_alone(chromium, stack, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "jaipur")
    context = chromium.new_context(viewport={"width": 360, "height": 800})
    page = context.new_page()
    try:
        page.goto(stack.url() + "/")
        page.wait_for_selector("input[name=username]:focus")  # the first field has the focus on arrival
        page.keyboard.type(user["username"])
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#who:has-text('{user['username']}')")
        for _ in range(10):  # Tab from the top of the page to the Lookup link, then Enter
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Lookup":
                break
        page.keyboard.press("Enter")
        page.wait_for_selector("#lookup-input:focus")
        page.keyboard.press("Shift+Tab")
        assert page.evaluate("document.activeElement.tagName") in {"A", "BUTTON"}  # the way back is reachable too
    finally:
        context.close()


def sign_in(page, user, password=PASSWORD):
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", password)
    page.press("input[name=password]", "Enter")
    page.wait_for_selector(f"#who:has-text('{user['username']}')")


def test_signing_out_with_unsent_scans_warns_and_keeps_them_for_that_user_only(chromium, stack, gw, admin_token):
    first = create(gw, admin_token, "dispatcher", "raipur")
    second = create(gw, admin_token, "dispatcher", "raipur")
    context, page = signed_in_page(chromium, stack, first)
    parent = "SB" + digits(first, 5, "901234")
    asked = []
    try:
        context.set_offline(True)
        scan(page, parent)
        scan(page, f"KEPT{parent}")
        page.wait_for_selector("#scan-waiting:has-text('2 scans waiting')")
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])")
        assert asked and "2 scans are not sent" in asked[0] and first["username"] in asked[0], asked
        context.set_offline(False)
        sign_in(page, second)  # the next worker on the same tablet: their station is empty, nothing of the first's sent
        page.goto(stack.url() + "/#/scan")
        page.wait_for_selector("#scan-input:focus")
        page.wait_for_selector("#scan-waiting:empty", state="attached")
        assert gw.get(f"/bags/{parent}", headers=bearer(admin_token)).status_code == 404
        assert stored_scans(page, first) == 2
        page.click("#logout")  # nothing unsent: no question
        page.wait_for_selector("#login:not([hidden])")
        sign_in(page, first)  # back again: the first worker's scans go, as theirs
        page.goto(stack.url() + "/#/scan")
        page.wait_for_selector("#scan-count:has-text('1/30')", timeout=20000)  # counts queued children too...
        page.wait_for_selector("#scan-waiting:empty", state="attached", timeout=20000)  # ...so wait until all went
        scans = gw.get("/scans", params={"qr": parent}, headers=bearer(admin_token)).json()["items"]
        assert {s["username"] for s in scans} == {first["username"]} and len(scans) == 2, scans
        assert asked == [asked[0]]
    finally:
        context.close()


def test_the_dashboard_reopens_a_stream_gone_silent_and_catches_up(chromium, stack, gw, admin_token):
    """A connection that dies without closing (Wi-Fi gone) sends nothing: frozen here by stopping the dashboard
    process (SIGSTOP), since Chromium's offline emulation leaves an open stream flowing. The page's watchdog (three
    heartbeat periods; the e2e stack beats every second) gives up on it, says so, and the stream reopened with
    Last-Event-ID brings the scan made meanwhile."""
    dispatcher = create(gw, admin_token, "dispatcher", "bathinda")
    token = login(gw, dispatcher["username"]).json()["access_token"]
    parent = "SB" + digits(dispatcher, 5, "012345")
    context, page = signed_in_page(chromium, stack, dispatcher, screen="dashboard", ready="#dash-live[data-state=live]")
    dashboard = stack.procs["dashboard"].pid
    try:
        assert "bathinda" in page.inner_text("#screen h1")  # a dispatcher's dashboard is their area's
        os.kill(dashboard, signal.SIGSTOP)
        page.wait_for_selector("#dash-live[data-state=reconnecting]", timeout=15000)
        assert gw.post("/scans/parent", json={"qr_id": parent}, headers=bearer(token)).status_code == 200
        os.kill(dashboard, signal.SIGCONT)
        page.wait_for_selector("#dash-live[data-state=live]", timeout=60000)
        page.wait_for_selector(f"#dash-scans li:has-text('{parent}')", timeout=15000)
    finally:
        os.kill(dashboard, signal.SIGCONT)
        context.close()
