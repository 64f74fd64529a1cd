from datetime import timedelta

import jwt

from services.auth import cli
from services.auth.models import User
from shared.timeutil import as_utc, utcnow
from tests.auth.conftest import ADMIN, PASSWORD, make_settings
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


def _problem_without_request_id(response) -> dict:
    body = response.json()
    body.pop("request_id", None)
    return body


def test_five_wrong_passwords_throttle_the_pair_alike_for_known_and_unknown_usernames(api):
    api.create_user("bill1")
    for username in ("bill1", "nobody"):
        for _ in range(5):
            assert api.login(username, "Wrong!pass1").status_code == 401
    known, unknown = api.login("bill1"), api.login("nobody")  # the right password does not help
    assert known.status_code == unknown.status_code == 429
    assert _problem_without_request_id(known) == _problem_without_request_id(unknown)
    assert int(known.headers["Retry-After"]) >= 1 and int(unknown.headers["Retry-After"]) >= 1
    ignored = {"retry-after", "x-request-id", "date", "content-length"}
    assert ({k for k in known.headers if k not in ignored} == {k for k in unknown.headers if k not in ignored})
    assert "bill1" not in known.text and "lock" not in known.text


def test_the_pair_throttle_spares_other_client_addresses_and_does_not_lock(api):
    api.create_user("bill1")
    for _ in range(5):
        api.login("bill1", "Wrong!pass1", client="203.0.113.7")
    assert api.login("bill1", client="203.0.113.7").status_code == 429
    assert api.login("bill1", client="198.51.100.9").status_code == 200
    assert api.login("bill1").status_code == 200  # the default test client is another address too


def test_the_pair_throttle_counts_the_username_case_insensitively(api):
    for name in ("Bill1", "BILL1", "bill1", "bIll1", "BiLL1"):
        api.login(name, "Wrong!pass1")
    assert api.login("bill1", "Wrong!pass1").status_code == 429


def test_the_pair_throttle_counts_only_failures(api):
    api.create_user("bill1")
    for _ in range(8):
        assert api.login("bill1").status_code == 200


def _fail_from_two_addresses(api, username: str, count: int) -> None:
    for i in range(count):
        assert api.login(username, "Wrong!pass1", client=f"203.0.113.{i % 2 + 1}").status_code == 401


def _locked_until(api, username: str):
    with db_session(api.app) as session:
        return session.query(User).filter_by(username_key=username).one().locked_until


def test_the_per_account_ceiling_across_clients_locks_the_account(api):
    api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 8)  # lockout_threshold is 8 in the test settings
    assert as_utc(_locked_until(api, "bill1")) > utcnow() + timedelta(minutes=14)
    assert api.login("bill1", client="198.51.100.9").status_code == 401


def test_a_locked_account_answers_like_an_unknown_username(api):
    api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 8)
    _fail_from_two_addresses(api, "nobody", 8)
    assert _locked_until(api, "bill1") is not None
    # From a fresh address: right and wrong password of the locked account, and the unknown username, alike.
    answers = [api.login(name, password, client="198.51.100.9") for name, password in
               (("bill1", PASSWORD), ("bill1", "Wrong!pass1"), ("nobody", PASSWORD))]
    assert {r.status_code for r in answers} == {401}
    assert len({str(_problem_without_request_id(r)) for r in answers}) == 1
    # And they run into the pair throttle together: a locked account's attempts count like wrong passwords.
    for _ in range(3):
        assert api.login("bill1", PASSWORD, client="198.51.100.9").status_code == 401
    assert api.login("bill1", PASSWORD, client="198.51.100.9").status_code == 429
    for _ in range(4):
        api.login("nobody", PASSWORD, client="198.51.100.9")
    assert api.login("nobody", PASSWORD, client="198.51.100.9").status_code == 429


def test_the_lock_is_visible_to_admins(api):
    user = api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 8)
    shown = api.client.get(f"/users/{user['id']}", headers=api.admin()).json()
    assert shown["locked_until"] is not None


def test_admin_unlock_lets_a_locked_user_in_again(api):
    user = api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 8)
    assert api.login("bill1", client="198.51.100.9").status_code == 401
    response = api.client.patch(f"/users/{user['id']}", json={"unlock": True}, headers=api.admin())
    assert response.status_code == 200 and response.json()["locked_until"] is None
    assert api.login("bill1", client="198.51.100.9").status_code == 200


def test_cli_unlock_lets_a_locked_user_in_again(api, backend, capsys):
    api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 8)
    assert cli.main(["unlock", "--username", "BILL1"], settings=make_settings(backend)) == 0
    assert "unlocked 'bill1'" in capsys.readouterr().out
    assert _locked_until(api, "bill1") is None
    assert api.login("bill1", client="198.51.100.9").status_code == 200
    assert cli.main(["unlock", "--username", "nobody"], settings=make_settings(backend)) == 1


def test_the_bootstrap_admin_cannot_be_shut_out_from_another_address(api):
    for _ in range(6):
        api.login(ADMIN[0], "Wrong!pass1", client="203.0.113.66")
    assert api.login(*ADMIN).status_code == 200


def test_lock_expires_after_the_lockout_period(api):
    api.create_user("bill1")
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        user.locked_until = utcnow() - timedelta(seconds=1)
        session.commit()
    assert api.login("bill1").status_code == 200


def test_successful_login_resets_the_per_account_failure_count(api):
    api.create_user("bill1")
    _fail_from_two_addresses(api, "bill1", 7)
    assert api.login("bill1", client="198.51.100.9").status_code == 200
    api.login("bill1", "Wrong!pass1", client="198.51.100.9")
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        assert user.failed_logins == 1 and user.locked_until is None


def test_failures_older_than_the_lockout_window_start_a_new_count(api):
    api.create_user("bill1")
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        user.failed_logins, user.failures_since = 7, utcnow() - timedelta(minutes=61)
        session.commit()
    api.login("bill1", "Wrong!pass1", client="198.51.100.9")
    with db_session(api.app) as session:
        user = session.query(User).filter_by(username_key="bill1").one()
        assert user.failed_logins == 1 and user.locked_until is None


def test_deactivated_user_cannot_log_in(api):
    user = api.create_user("bill1")
    api.client.patch(f"/users/{user['id']}", json={"is_active": False}, headers=api.admin())
    response = api.login("bill1")
    assert response.status_code == 403


def test_login_attempts_per_client_address_are_rate_limited(api):
    # login_limit_per_ip is 40 in the test settings; spread over usernames (under 5 failures each) so only the IP limit applies.
    statuses = [api.login(f"user{i % 16}", "Wrong!pass1").status_code for i in range(41)]
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
