"""The security review's reproductions, from outside through the gateway: text no service can store is a 422
(a bad cursor 400), never a 500; error answers stay small; no answer points inside; token answers are not cached."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.conftest import bearer

pytestmark = pytest.mark.e2e

NUL_TOKEN = "ab\u0000cdefghijk.xyz"


def raw_post(gw: httpx.Client, path: str, body: str, headers: dict | None = None) -> httpx.Response:
    """POST a JSON text as written (json.dumps would escape a lone surrogate httpx cannot encode otherwise)."""
    return gw.post(path, content=body.encode("utf-8", "surrogatepass"),
                   headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("path, body, needs_token", [
    ("/auth/login", '{"username": "chi\\u0000ef", "password": "x"}', False),
    ("/auth/login", '{"username": "chi\\ud800ef", "password": "x"}', False),
    ("/auth/refresh", json.dumps({"refresh_token": NUL_TOKEN}), False),
    ("/auth/logout", json.dumps({"refresh_token": NUL_TOKEN}), True),
    ("/scans/parent", '{"qr_id": "SB77001", "scan_id": "nul\\u0000id"}', True),
    ("/scans/child", '{"parent_qr": "SB77001", "child_qr": "CH1", "scan_id": "nul\\u0000id"}', True),
    ("/scans/parent", '{"qr_id": "SB77001", "scan_id": "lone\\udc00"}', True),
    ("/users", '{"username": "x", "email": "x@example.com", "password": "Aa1!aaaa", "role": "biller", '
               '"\\u0000": 1}', True),
])
def test_nul_and_lone_surrogates_in_a_body_are_422(gw, admin_token, path, body, needs_token):
    response = raw_post(gw, path, body, bearer(admin_token) if needs_token else None)
    assert response.status_code == 422, response.text
    assert "NUL characters and unpaired surrogates" in response.json()["detail"]


@pytest.mark.parametrize("target", ["/bills/parents/SB%0000001", "/bags/SB%0000001", "/bags?q=SB%00",
                                    "/bags/SB%ED%A0%8001"])
def test_nul_in_a_path_or_query_is_422_at_the_gateway(gw, admin_token, target):
    response = gw.get(target, headers=bearer(admin_token))
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("cursor", ["WyJcdTAwMDAiXQ", "WyJcdWQ4MDAiXQ"])
def test_a_cursor_holding_nul_or_a_lone_surrogate_is_400(gw, admin_token, cursor):
    response = gw.get(f"/bags?q=SB&cursor={cursor}", headers=bearer(admin_token))
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("bad-cursor")


def test_a_body_of_sixty_thousand_unknown_keys_draws_a_small_422(gw):
    body = json.dumps({"username": "u", "password": "p", **{f"k{i}": i for i in range(60_000)}})
    assert len(body) < 1_048_576
    response = gw.post("/auth/login", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert len(response.content) < 10_000
    assert len(response.json()["errors"]) == 20 and response.json()["errors_omitted"] > 0


@pytest.mark.parametrize("area", ["auth", "users", "bags", "scans", "bills", "dashboard"])
def test_no_answer_with_a_trailing_slash_points_inside(stack, gw, admin_token, area):
    response = gw.get(f"/{area}/", headers=bearer(admin_token), follow_redirects=False)
    assert not 300 <= response.status_code < 400, response.headers
    assert "location" not in response.headers
    for port in stack.ports.values():
        assert f":{port}" not in response.text or port == stack.ports["gateway"]


def test_token_answers_are_never_cached(gw):
    from tests.e2e.conftest import ADMIN, login
    response = login(gw, *ADMIN)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    refreshed = gw.post("/auth/refresh", json={"refresh_token": response.json()["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.headers["cache-control"] == "no-store"
