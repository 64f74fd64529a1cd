"""The gateway checks access tokens at the edge; only login, refresh and the JWKS are public."""
from __future__ import annotations

import jwt
import pytest

from tests.tokens import SigningKey, tampered, unsigned


def echoed_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.json()["headers"]}


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["status"] == 401 and problem["type"] == "urn:bagtrack:problem:unauthorized"
    assert problem["request_id"] == response.headers["x-request-id"]


def test_valid_token_passes_and_reaches_upstream_unchanged(client, signing_key):
    token = signing_key.mint()
    response = client.get("/api/v1/bags/SB00001", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert echoed_headers(response)["authorization"] == f"Bearer {token}"


def test_repeated_requests_with_one_token_all_pass(client, auth):
    assert all(client.get("/api/v1/scans", headers=auth).status_code == 200 for _ in range(3))


def test_missing_token_is_401(client):
    assert_unauthorized(client.get("/api/v1/bags"))


def test_non_bearer_scheme_is_401(client):
    assert_unauthorized(client.get("/api/v1/bags", headers={"Authorization": "Basic dXNlcjpwYXNz"}))


@pytest.mark.parametrize("make_token", [
    pytest.param(lambda key: key.mint(exp=1_000_000, iat=999_000), id="expired"),
    pytest.param(lambda key: tampered(key.mint()), id="tampered-signature"),
    pytest.param(lambda key: unsigned(key.mint()), id="alg-none"),
    pytest.param(lambda key: jwt.encode({"sub": "7"}, "s" * 32, algorithm="HS256", headers={"kid": key.kid}),
                 id="hs256"),
    pytest.param(lambda key: key.mint(aud="someone-else"), id="wrong-audience"),
    pytest.param(lambda key: key.mint(iss="evil-auth"), id="wrong-issuer"),
    pytest.param(lambda key: key.mint(kid="unknown-kid"), id="unknown-kid"),
    pytest.param(lambda key: SigningKey.generate(key.kid).mint(), id="other-key-same-kid"),
    pytest.param(lambda key: key.mint(typ="refresh"), id="refresh-token"),
    pytest.param(lambda key: "not-a-jwt", id="garbage"),
])
def test_bad_tokens_are_401(client, signing_key, make_token):
    response = client.get("/api/v1/bags", headers={"Authorization": f"Bearer {make_token(signing_key)}"})
    assert_unauthorized(response)


def test_a_token_refused_once_is_refused_again(client, signing_key):
    token = tampered(signing_key.mint())
    for _ in range(2):
        assert_unauthorized(client.get("/api/v1/bags", headers={"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/v1/auth/login"), ("POST", "/api/v1/auth/refresh"), ("GET", "/api/v1/auth/jwks"),
])
def test_public_routes_need_no_token(client, method, path):
    response = client.request(method, path, json={"username": "dina", "password": "x"} if method == "POST" else None)
    assert response.status_code == 200, response.text


def test_public_route_with_other_method_is_not_forwarded(client):
    # GET /auth/login is no route of the public API: 404 from the gateway, with or without a token.
    response = client.get("/api/v1/auth/login")
    assert response.status_code == 404 and response.json()["type"] == "urn:bagtrack:problem:not-found"


def test_other_auth_routes_need_a_token(client):
    assert_unauthorized(client.post("/api/v1/auth/logout"))
    assert_unauthorized(client.get("/api/v1/auth/me"))


def test_jwks_through_gateway_is_auths(client, signing_key):
    assert client.get("/api/v1/auth/jwks").json()["keys"][0]["kid"] == signing_key.kid
