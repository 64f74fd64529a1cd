"""Races that must have exactly one winner, fired from real threads at the in-process app."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from services.auth.app import create_app
from tests.auth.conftest import ADMIN, AuthApi, make_settings


def test_one_refresh_token_used_four_times_at_once_within_the_leeway_keeps_the_family(api):
    pair = api.login(*ADMIN).json()

    def refresh(_):
        return api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(refresh, range(4)))
    # One first use and three retries within the leeway: none of them may be taken for reuse.
    assert [r.status_code for r in responses] == [200] * 4, [r.text for r in responses]
    successors = {r.json()["refresh_token"] for r in responses}
    assert len(successors) == 4
    for successor in successors:
        assert api.client.post("/auth/refresh", json={"refresh_token": successor}).status_code == 200


def test_one_refresh_token_used_twice_at_once_without_leeway_rotates_once(api, monkeypatch):
    monkeypatch.setattr(api.app.state.auth.settings, "refresh_reuse_leeway", 0)
    pair = api.login(*ADMIN).json()

    def refresh(_):
        return api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = sorted(pool.map(refresh, range(4)))
    assert statuses.count(200) == 1  # the losers are treated as reuse: the family is revoked
    assert set(statuses) <= {200, 401}


def test_parallel_creates_never_exceed_the_dispatcher_cap(api):  # the cap is 2 in the test settings
    headers = api.admin()

    def create(i):
        body = {"username": f"racer{i}", "email": f"racer{i}@example.com", "password": "Str0ng!pass",
                "role": "dispatcher", "dispatch_area": "bathinda"}
        return api.client.post("/users", json=body, headers=headers).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(create, range(6)))
    active = api.client.get("/users", params={"dispatch_area": "bathinda", "is_active": True}, headers=headers).json()
    assert len(active["items"]) == 2
    assert statuses.count(201) == 2
    assert set(statuses) <= {201, 409, 503}


@pytest.fixture
def one_connection_api(api, backend):
    """A second auth app on the same database whose pool has ONE connection, with room for 8 hashes at once."""
    with TestClient(create_app(make_settings(backend, db_pool_size=1, db_max_overflow=0,
                                             max_concurrent_hashes=8))) as client:
        yield AuthApi(client)


def test_logins_in_the_middle_of_hashing_leave_the_only_connection_to_auth_me(one_connection_api, monkeypatch):
    api, logins = one_connection_api, 8
    headers = api.admin()
    passwords = api.app.state.auth.passwords
    real_verify, hashing, finish = passwords._verify, threading.Semaphore(0), threading.Event()

    def verify_when_told(password_hash, password):
        hashing.release()
        finish.wait(timeout=30)
        return real_verify(password_hash, password)

    monkeypatch.setattr(passwords, "_verify", verify_when_told)
    with ThreadPoolExecutor(logins) as pool:
        try:
            storm = [pool.submit(api.login, *ADMIN) for _ in range(logins)]
            # On a one-connection pool, 8 logins can only be hashing at once if none of them holds the connection.
            assert all(hashing.acquire(timeout=10) for _ in range(logins)), "logins queued for the connection"
            # Had any login kept a connection while hashing, this would wait out db_pool_timeout and answer 503.
            me = api.client.get("/auth/me", headers=headers)
        finally:
            finish.set()
        assert me.status_code == 200, me.text
        assert [login.result(timeout=10).status_code for login in storm] == [200] * logins
