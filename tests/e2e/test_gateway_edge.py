"""Issue 8 at the gateway, against the whole system: header limits, and only the public API passes the gateway."""
from __future__ import annotations

import httpx

from gateway.routes import PUBLIC_API
from tests.e2e.conftest import ADMIN, bearer, login

# Routes the services serve only to each other: on no allow-list, never forwarded, never documented.
SERVICE_TO_SERVICE = {  # scanning's bill marks and counts: only billing calls them
    ("PUT", "/internal/parents/{qr_id}/bill"), ("DELETE", "/internal/parents/{qr_id}/bill"),
    ("POST", "/internal/parents/counts"), ("GET", "/internal/parents/marks"),
    # what the dashboard composes from: scanning's and billing's aggregates, feeds and lookups
    ("GET", "/internal/stats"), ("GET", "/internal/trends"), ("GET", "/internal/scans"),
    ("GET", "/internal/bags/{qr_id}/lookup"),
    ("GET", "/internal/bills/stats"), ("GET", "/internal/bills/trends"), ("GET", "/internal/bills/events"),
    ("GET", "/internal/bills/lookup/{bill_id}"), ("GET", "/internal/parents/{qr_id}/bill"),
}
PROBES = ("/health", "/ready", "/metrics")


def test_every_service_route_is_either_public_api_or_service_to_service(stack):
    """A route a service grows must be classified here: added to gateway.routes.PUBLIC_API, or listed above."""
    served = set()
    for name in ("auth", "scanning", "billing", "dashboard"):
        for path, operations in httpx.get(stack.url(name) + "/openapi.json").json()["paths"].items():
            if not path.endswith(PROBES):
                served |= {(method.upper(), path) for method in operations}
    public = {(method, path) for method, path, _ in PUBLIC_API}
    assert served - SERVICE_TO_SERVICE == public
    assert SERVICE_TO_SERVICE <= served


def test_service_to_service_routes_are_not_in_the_merged_document(stack):
    paths = httpx.get(stack.url() + "/openapi.json").json()["paths"]
    for method, path in SERVICE_TO_SERVICE:
        assert method.lower() not in paths.get("/api/v1" + path, {}), path
    assert "get" in paths["/api/v1/bags/{qr_id}"] and "post" in paths["/api/v1/auth/login"]


def test_internal_routes_are_404_at_the_gateway_and_still_served_to_services(stack, gw, admin_token):
    for method, path in (("GET", "/internal/parents/marks"), ("POST", "/internal/parents/counts")):
        response = gw.request(method, path, headers=bearer(admin_token), json={"qr_ids": ["SB00001"]})
        assert response.status_code == 404, path
        assert response.json()["type"] == "urn:bagtrack:problem:not-found"
    direct = httpx.post(stack.url("scanning") + "/internal/parents/counts", json={"qr_ids": ["SB00001"]})
    assert direct.status_code == 200 and direct.json()["missing"] == ["SB00001"]


def test_a_9_kib_header_is_431_even_on_login(gw):
    response = gw.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]},
                       headers={"X-Big": "a" * 9 * 1024})
    assert response.status_code == 431
    assert response.headers["connection"] == "close"
    assert login(gw, *ADMIN).status_code == 200  # a fresh connection is served as usual


def test_40_kib_of_headers_is_431(gw, admin_token):
    headers = {**bearer(admin_token), **{f"X-Pad-{i}": "b" * 4000 for i in range(10)}}
    assert gw.get("/bags", headers=headers).status_code == 431


def test_an_authorization_past_4_kib_is_401_and_a_padded_one_under_it_passes(gw, admin_token):
    assert gw.get("/bags", headers={"Authorization": "Bearer" + " " * 5 * 1024 + admin_token}).status_code == 401
    assert gw.get("/bags", headers={"Authorization": "Bearer" + " " * 1024 + admin_token}).status_code == 200


def test_a_1_mb_header_is_431_and_the_gateway_keeps_serving(gw):
    response = gw.get("/auth/jwks", headers={"X-Big": "a" * 1_000_000})
    assert response.status_code == 431
    assert response.headers["connection"] == "close"
    assert gw.get("/auth/jwks").status_code == 200
