"""The foundation issue's acceptance steps (auth, gateway, probes), through the gateway only."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import jwt
import pytest

from services.auth.keys import SigningKey
from tests.e2e.conftest import PASSWORD, bearer, create, login, new_name

pytestmark = pytest.mark.e2e


def test_admin_creates_a_dispatcher_and_a_biller_who_each_see_themselves(gw, admin_token):
    for role, area in (("dispatcher", "indore"), ("biller", None)):
        user = create(gw, admin_token, role, area)
        token = login(gw, user["username"]).json()["access_token"]
        me = gw.get("/auth/me", headers=bearer(token))
        assert me.status_code == 200
        assert (me.json()["username"], me.json()["role"], me.json()["dispatch_area"]) == (user["username"], role, area)


def test_dispatcher_creating_users_is_403(gw, admin_token):
    user = create(gw, admin_token, "dispatcher", "ranchi")
    token = login(gw, user["username"]).json()["access_token"]
    body = {"username": new_name("x"), "email": "x@example.com", "password": PASSWORD, "role": "biller"}
    response = gw.post("/users", json=body, headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["status"] == 403 and response.json()["request_id"]


def _claims(token: str, **changes) -> dict:
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    return claims


def test_missing_expired_tampered_alg_none_and_wrong_audience_tokens_are_401(gw, stack, admin_token):
    key = SigningKey.from_pem((Path(stack.env["BAGTRACK_VAR_DIR"]) / "auth-signing-key.pem").read_bytes())
    now = int(time.time())
    expired = jwt.encode(_claims(admin_token, iat=now - 7200, exp=now - 3600), key.private_key,
                         algorithm="EdDSA", headers={"kid": key.kid})
    wrong_aud = jwt.encode(_claims(admin_token, aud="elsewhere"), key.private_key, algorithm="EdDSA",
                           headers={"kid": key.kid})
    head, payload, sig = admin_token.split(".")
    tampered = f"{head}.{payload[:-4]}AAAA.{sig}"
    alg_none = jwt.encode(_claims(admin_token), None, algorithm="none")
    cases = {"missing": {}, "expired": bearer(expired), "tampered": bearer(tampered),
             "alg_none": bearer(alg_none), "wrong_aud": bearer(wrong_aud), "garbage": bearer("not.a.jwt")}
    for name, headers in cases.items():
        for path in ("/auth/me", "/users", "/bags", "/scans"):
            response = gw.get(path, headers=headers)
            assert response.status_code == 401, (name, path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")


def test_sixth_login_after_five_bad_passwords_is_throttled_even_with_the_right_one(gw, admin_token):
    user = create(gw, admin_token, "biller")
    for _ in range(5):
        assert login(gw, user["username"], "Wr0ng!pass").status_code == 401
    throttled = login(gw, user["username"])  # refused for this client address only; the account is not locked
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1


def test_refresh_rotation_and_reuse_detection(gw, admin_token):
    user = create(gw, admin_token, "biller")
    first = login(gw, user["username"]).json()
    second = gw.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert gw.get("/auth/me", headers=bearer(second.json()["access_token"])).status_code == 200
    retried = gw.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert retried.status_code == 200  # within the leeway (1 s here): a retry whose answer was lost
    time.sleep(1.1)  # past the leeway
    reuse = gw.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    for successor in (second, retried):  # the whole family is revoked
        assert gw.post("/auth/refresh", json={"refresh_token": successor.json()["refresh_token"]}).status_code == 401


def test_logout_through_the_gateway_revokes_the_refresh_token(gw, admin_token):
    user = create(gw, admin_token, "biller")
    pair = login(gw, user["username"]).json()
    out = gw.post("/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=bearer(pair["access_token"]))
    assert out.status_code == 204
    assert gw.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_request_id_is_echoed_and_generated(gw, admin_token):
    mine = gw.get("/auth/me", headers={**bearer(admin_token), "X-Request-ID": "shift-42-scan-7"})
    assert mine.headers["x-request-id"] == "shift-42-scan-7"
    assert len(gw.get("/auth/me", headers=bearer(admin_token)).headers["x-request-id"]) >= 16


def test_gateway_and_every_service_answer_health_ready_and_metrics(stack):
    for name in ("gateway", "auth", "scanning", "billing", "dashboard"):
        assert httpx.get(stack.url(name) + "/health").json() == {"status": "ok"}
        probes = stack.probe_url(name)  # the gateway's ops port; a service's one port
        assert httpx.get(probes + "/ready").status_code == 200
        assert "bagtrack_http_requests_total" in httpx.get(probes + "/metrics").text


def test_the_gateways_public_port_hides_ready_and_metrics(stack):
    for path in ("/ready", "/metrics"):
        response = httpx.get(stack.url() + path)
        assert response.status_code == 404, path
        assert response.json()["type"] == "urn:bagtrack:problem:not-found"
    assert httpx.get(stack.ops_url() + "/api/v1/auth/jwks").status_code == 404  # the ops port serves no API


def test_oversized_body_is_413(gw):
    response = gw.post("/auth/login", content=b"x" * (1024 * 1024 + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_the_gateway_serves_one_openapi_document_for_every_public_route(stack):
    document = httpx.get(stack.url() + "/openapi.json").json()
    paths = document["paths"]
    for path, method in (("/api/v1/auth/login", "post"), ("/api/v1/users/{user_id}", "patch"),
                         ("/api/v1/scans/child", "post"), ("/api/v1/bags/{qr_id}", "get"),
                         ("/api/v1/bags/export.csv", "get")):
        assert method in paths[path], path
    assert not any("/internal/" in path for path in paths)  # service-to-service: never public
    assert "security" not in paths["/api/v1/auth/login"]["post"]
    assert paths["/api/v1/scans/child"]["post"]["security"] == [{"bearer": []}]
    assert "ScanResult" in document["components"]["schemas"] and "UserPublic" in document["components"]["schemas"]
    assert not any(p.endswith(("/health", "/ready", "/metrics")) for p in paths)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs and refs <= set(document["components"]["schemas"])
    assert "swagger" in httpx.get(stack.url() + "/docs").text.lower()
