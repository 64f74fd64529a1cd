"""Races that must have exactly one winner, fired from real threads at the in-process app."""
from concurrent.futures import ThreadPoolExecutor

from tests.auth.conftest import ADMIN


def test_one_refresh_token_used_twice_at_once_rotates_once(api):
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
