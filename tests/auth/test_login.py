from datetime import timedelta

import jwt

from services.auth.models import User
from shared.timeutil import utcnow
from tests.auth.conftest import ADMIN, PASSWORD
from tests.support import db_session


def test_login_returns_a_token_pair_with_identity_claims(api):
    api.create_user("disp1", role="dispatcher", area="jaipur")
    response = api.login("DISP1")  # usernames are case-insensitive
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900 and body["refresh_token"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["username"] == "disp1" and claims["role"] == "dispatcher" and claims["area"] == "jaipur"
    assert claims["exp"] - claims["iat"] == 900
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "EdDSA"


def test_wrong_password_and_unknown_user_get_the_same_401(api):
    wrong = api.login(ADMIN[0], "Wrong!pass1")
    unknown = api.login("nobody", "Wrong!pass1")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["content-type"] == "application/problem+json"


def test_unknown_user_costs_one_password_verification_like_a_known_one(api, monkeypatch):
    passwords = api.app.state.auth.passwords
    calls = []
    real_verify = passwords.verify
    monkeypatch.setattr(passwords, "verify", lambda h, p: calls.append(h) or real_verify(h, p))
    api.login("nobody", "Wrong!pass1")
    api.login(ADMIN[0], "Wrong!pass1")
    assert len(calls) == 2 and calls[0] is None  # None: the dummy hash is verified for the unknown user


def test_sixth_login_after_five_failures_is_refused_even_with_the_right_password(api):
    api.create_user("bill1")
    for _ in range(5):
        assert api.login("bill1", "Wrong!pass1").status_code == 401
    locked = api.login("bill1")
    assert locked.status_code == 423
    assert "locked" in locked.json()["detail"]


def test_admin_unlock_lets_a_locked_user_in_again(api):
    user = api.create_user("bill1")
    for _ in range(5):
        api.login("bill1", "Wrong!pass1")
    response = api.client.patch(f"/users/{user['id']}", json={"unlock": True}, headers=api.admin())
    assert response.status_code == 200
    assert api.login("bill1").status_code == 200


def test_lock_expires_after_the_lockout_period(api):
    api.create_user("bill1")
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        user.locked_until = utcnow() - timedelta(seconds=1)
        session.commit()
    assert api.login("bill1").status_code == 200


def test_successful_login_resets_the_failure_count(api):
    api.create_user("bill1")
    for _ in range(4):
        api.login("bill1", "Wrong!pass1")
    assert api.login("bill1").status_code == 200
    for _ in range(4):
        api.login("bill1", "Wrong!pass1")
    assert api.login("bill1").status_code == 200


def test_deactivated_user_cannot_log_in(api):
    user = api.create_user("bill1")
    api.client.patch(f"/users/{user['id']}", json={"is_active": False}, headers=api.admin())
    response = api.login("bill1")
    assert response.status_code == 403


def test_login_attempts_per_username_are_rate_limited_with_retry_after(api):
    statuses = [api.login("someone", "Wrong!pass1").status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    response = api.login("someone", "Wrong!pass1")
    assert int(response.headers["Retry-After"]) >= 1


def test_login_attempts_per_client_address_are_rate_limited(api):
    # login_limit_per_ip is 40 in the test settings; spread over usernames so only the IP limit applies.
    statuses = [api.login(f"user{i % 8}", "Wrong!pass1").status_code for i in range(41)]
    assert 429 not in statuses[:40]
    assert statuses[40] == 429


def test_login_with_malformed_body_is_422_problem(api):
    response = api.client.post("/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["status"] == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_password_never_echoed_in_validation_errors(api):
    response = api.client.post("/auth/login", json={"username": "x", "password": "S3cret!!", "extra": 1})
    assert response.status_code == 422
    assert "S3cret!!" not in response.text


def test_default_password_is_not_accepted_for_admin_login_after_change(api):
    token = api.token(*ADMIN)
    response = api.client.post("/users/me/password", headers=api.as_(token),
                               json={"current_password": ADMIN[1], "new_password": PASSWORD})
    assert response.status_code == 204
    assert api.login(ADMIN[0], ADMIN[1]).status_code == 401
    assert api.login(ADMIN[0], PASSWORD).status_code == 200
