"""What the web app stands on, through the gateway: its page and assets with their security headers, the refresh
token as an httpOnly cookie (login, refresh, reuse, logout), and the reference data its forms are built from."""
from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import ADMIN, PASSWORD, bearer, create, login

pytestmark = pytest.mark.e2e

COOKIE = "bagtrack_refresh"
WEB = {"X-Requested-With": "bagtrack"}


@pytest.fixture
def browser(stack):
    """A client with a cookie jar, as a browser on the gateway's origin."""
    with httpx.Client(base_url=stack.url(), timeout=10) as client:
        yield client


def cookie_login(client, username, password=PASSWORD) -> httpx.Response:
    return client.post("/api/v1/auth/login", json={"username": username, "password": password,
                                                    "refresh_cookie": True})


def test_the_page_is_served_with_a_strict_policy_gzipped_and_revalidated(browser):
    page = browser.get("/", headers={"Accept-Encoding": "gzip"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-encoding"] == "gzip" and page.headers["cache-control"] == "no-cache"
    again = browser.get("/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and not again.content
    plain = browser.get("/", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert page.content == plain.content and len(plain.content) > int(page.headers["content-length"])


def test_unknown_assets_and_other_methods_are_clean_4xx(browser):
    assert browser.get("/app/%2e%2e/%2e%2e/etc/passwd").status_code == 404
    assert browser.get("/app/no-such-file.js").status_code == 404
    assert browser.get("/app/no-such-file.js").json()["status"] == 404
    assert browser.post("/").status_code == 405


def test_the_ops_port_does_not_serve_the_app(stack):
    assert httpx.get(stack.ops_url() + "/").status_code == 404


def test_a_cookie_login_keeps_the_refresh_token_out_of_reach_of_page_scripts(browser, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "jaipur")
    response = cookie_login(browser, user["username"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"] is None and body["access_token"]
    assert response.headers["cache-control"] == "no-store"
    set_cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "Path=/api/v1/auth", "SameSite=strict", "Max-Age="):
        assert attribute in set_cookie, set_cookie
    assert "Secure" not in set_cookie  # plain http here; behind TLS (X-Forwarded-Proto: https) it is Secure


def test_refresh_from_the_cookie_rotates_it_and_needs_the_csrf_header(browser, gw, admin_token):
    user = create(gw, admin_token, "biller")
    assert cookie_login(browser, user["username"]).status_code == 200
    first = browser.cookies[COOKIE]
    refused = browser.post("/api/v1/auth/refresh")
    assert refused.status_code == 403 and "X-Requested-With" in refused.json()["detail"]
    rotated = browser.post("/api/v1/auth/refresh", headers=WEB)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["refresh_token"] is None
    token = rotated.json()["access_token"]
    assert gw.get("/auth/me", headers=bearer(token)).json()["username"] == user["username"]
    assert browser.cookies[COOKIE] != first


def test_refresh_without_a_cookie_is_401(stack):
    with httpx.Client(base_url=stack.url()) as fresh:
        response = fresh.post("/api/v1/auth/refresh", headers=WEB)
    assert response.status_code == 401 and response.json()["status"] == 401


def test_a_refresh_token_body_still_works_for_api_clients(gw, admin_token):
    user = create(gw, admin_token, "biller")
    pair = login(gw, user["username"]).json()
    rotated = gw.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200 and rotated.json()["refresh_token"]


def test_logout_from_the_cookie_revokes_it_and_clears_it(browser, gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "hisar")
    token = cookie_login(browser, user["username"]).json()["access_token"]
    stolen = browser.cookies[COOKIE]
    out = browser.post("/api/v1/auth/logout", headers=bearer(token))
    assert out.status_code == 204
    assert COOKIE not in browser.cookies
    replay = httpx.post(browser.base_url.join("/api/v1/auth/refresh"), headers=WEB, cookies={COOKIE: stolen})
    assert replay.status_code == 401


def test_logout_with_neither_a_body_nor_a_cookie_is_422(gw, admin_token):
    response = gw.post("/auth/logout", headers=bearer(admin_token))
    assert response.status_code == 422


def test_reference_data_for_every_signed_in_role(gw, admin_token):
    dispatcher = create(gw, admin_token, "dispatcher", "akola")
    token = login(gw, dispatcher["username"]).json()
    auth_ref = gw.get("/auth/reference", headers=bearer(token["access_token"]))
    assert auth_ref.status_code == 200
    ref = auth_ref.json()
    assert set(ref["roles"]) == {"admin", "biller", "dispatcher"} and "akola" in ref["areas"]
    assert ref["dispatchers_per_area"] is None  # counts are the admins'
    admin_ref = gw.get("/auth/reference", headers=bearer(admin_token)).json()
    assert admin_ref["dispatchers_per_area"]["akola"] >= 1
    scans = gw.get("/scans/reference", headers=bearer(token["access_token"]))
    assert scans.status_code == 200
    formats = {f["pattern"]: f["capacity"] for f in scans.json()["parent_formats"]}
    assert formats == {"^SB[0-9]{5}$": 30, "^M444-[0-9]{5}$": 15}
    assert scans.json()["idempotency_window_seconds"] == 48 * 3600
    for path in ("/auth/reference", "/scans/reference"):
        assert gw.get(path).status_code == 401


def test_the_admin_named_in_the_stack_can_use_a_cookie_login(browser):
    assert cookie_login(browser, *ADMIN).status_code == 200
