import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from services.auth.models import RefreshToken
from shared.timeutil import utcnow
from tests.auth.conftest import ADMIN
from tests.support import db_session


def _claims(api, **overrides):
    token = api.token(*ADMIN)
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(overrides)
    return claims


def _sign(api, claims, key=None, kid=None):
    keys = api.app.state.auth.keys.signing()
    return jwt.encode(claims, key or keys.private_key, algorithm="EdDSA", headers={"kid": kid or keys.kid})


def test_refresh_rotates_the_pair(api):
    first = api.login(*ADMIN).json()
    second = api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    me = api.client.get("/auth/me", headers=api.as_(second.json()["access_token"]))
    assert me.json()["username"] == ADMIN[0]


def _refresh(api, raw_token):
    return api.client.post("/auth/refresh", json={"refresh_token": raw_token})


def _used_long_ago(api, raw_token, seconds=None):
    """Move the token's first use back past the leeway (or by `seconds`), instead of sleeping through it."""
    seconds = api.app.state.auth.settings.refresh_reuse_leeway + 1 if seconds is None else seconds
    with db_session(api.app) as session:
        token = session.get(RefreshToken, raw_token.partition(".")[0])
        token.used_at = token.used_at - timedelta(seconds=seconds)
        session.commit()


def _family(api, raw_token):
    token_id = raw_token.partition(".")[0]
    with db_session(api.app) as session:
        return session.scalars(select(RefreshToken).where(
            RefreshToken.family_id == select(RefreshToken.family_id).where(RefreshToken.id == token_id)
            .scalar_subquery())).all()


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(api):
    first = api.login(*ADMIN).json()
    second = api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    _used_long_ago(api, first["refresh_token"])
    reuse = api.client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "reuse" in reuse.json()["detail"]
    # The thief's replay also kills the legitimate holder's newer token: the family is gone.
    assert api.client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]}).status_code == 401


def test_other_logins_survive_a_family_revocation(api):
    a = api.login(*ADMIN).json()
    b = api.login(*ADMIN).json()
    api.client.post("/auth/refresh", json={"refresh_token": a["refresh_token"]})
    _used_long_ago(api, a["refresh_token"])
    api.client.post("/auth/refresh", json={"refresh_token": a["refresh_token"]})  # reuse: revokes a's family
    assert api.client.post("/auth/refresh", json={"refresh_token": b["refresh_token"]}).status_code == 200


def test_logout_revokes_the_refresh_token(api):
    pair = api.login(*ADMIN).json()
    out = api.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=api.as_(pair["access_token"]))
    assert out.status_code == 204
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401


def test_an_expired_refresh_token_is_refused_every_time_and_never_rotated(api):
    pair = api.login(*ADMIN).json()
    token_id = pair["refresh_token"].partition(".")[0]
    with db_session(api.app) as session:
        session.get(RefreshToken, token_id).expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    for _ in range(2):  # not consumed by the refusal, so a second try is "expired" again, not "reuse"
        response = api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert response.status_code == 401 and "expired" in response.json()["detail"]
    with db_session(api.app) as session:
        family = session.scalars(select(RefreshToken).where(
            RefreshToken.family_id == select(RefreshToken.family_id).where(RefreshToken.id == token_id)
            .scalar_subquery())).all()
    assert [(t.id, t.used_at, t.revoked_at) for t in family] == [(token_id, None, None)]


def test_a_refresh_retried_within_the_leeway_gets_a_second_successor_and_both_stay_valid(api):
    first = api.login(*ADMIN).json()
    lost = _refresh(api, first["refresh_token"])  # the answer that never reached the client
    retry = _refresh(api, first["refresh_token"])
    assert lost.status_code == 200 and retry.status_code == 200, retry.text
    lost, retry = lost.json(), retry.json()
    assert retry["refresh_token"] != lost["refresh_token"] and retry["access_token"] != lost["access_token"]
    assert api.client.get("/auth/me", headers=api.as_(retry["access_token"])).json()["username"] == ADMIN[0]
    # Whichever successor the client holds works, and using one does not revoke the other.
    assert _refresh(api, retry["refresh_token"]).status_code == 200
    assert _refresh(api, lost["refresh_token"]).status_code == 200
    family = _family(api, first["refresh_token"])
    assert len(family) == 5 and all(t.revoked_at is None for t in family)


def test_a_retry_after_a_retry_within_the_leeway_still_succeeds(api):
    first = api.login(*ADMIN).json()
    statuses = [_refresh(api, first["refresh_token"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_reuse_after_the_leeway_revokes_every_successor_issued_within_it(api):
    first = api.login(*ADMIN).json()
    a = _refresh(api, first["refresh_token"]).json()
    b = _refresh(api, first["refresh_token"]).json()  # a retry within the leeway
    _used_long_ago(api, first["refresh_token"])
    reuse = _refresh(api, first["refresh_token"])
    assert reuse.status_code == 401 and "reuse" in reuse.json()["detail"]
    assert _refresh(api, a["refresh_token"]).status_code == 401
    assert _refresh(api, b["refresh_token"]).status_code == 401
    assert all(t.revoked_at is not None for t in _family(api, first["refresh_token"]))


def test_the_leeway_is_a_setting(api, monkeypatch):
    monkeypatch.setattr(api.app.state.auth.settings, "refresh_reuse_leeway", 2)
    first = api.login(*ADMIN).json()
    assert _refresh(api, first["refresh_token"]).status_code == 200
    _used_long_ago(api, first["refresh_token"], seconds=1)
    assert _refresh(api, first["refresh_token"]).status_code == 200  # 1 s after the first use: within 2 s
    _used_long_ago(api, first["refresh_token"], seconds=2)
    reuse = _refresh(api, first["refresh_token"])  # 3 s after: reuse
    assert reuse.status_code == 401 and "reuse" in reuse.json()["detail"]


def test_no_leeway_means_any_second_use_is_reuse(api, monkeypatch):
    monkeypatch.setattr(api.app.state.auth.settings, "refresh_reuse_leeway", 0)
    first = api.login(*ADMIN).json()
    second = _refresh(api, first["refresh_token"]).json()
    reuse = _refresh(api, first["refresh_token"])
    assert reuse.status_code == 401 and "reuse" in reuse.json()["detail"]
    assert _refresh(api, second["refresh_token"]).status_code == 401


def test_a_revoked_refresh_token_is_refused_within_the_leeway(api):
    pair = api.login(*ADMIN).json()
    successor = _refresh(api, pair["refresh_token"]).json()
    out = api.client.post("/auth/logout", json={"refresh_token": successor["refresh_token"]},
                          headers=api.as_(successor["access_token"]))
    assert out.status_code == 204
    retry = _refresh(api, pair["refresh_token"])  # within the leeway, but the family is logged out
    assert retry.status_code == 401 and "revoked" in retry.json()["detail"]
    assert _refresh(api, successor["refresh_token"]).status_code == 401


def test_an_expired_refresh_token_retried_within_the_leeway_is_refused_without_revoking(api):
    pair = api.login(*ADMIN).json()
    successor = _refresh(api, pair["refresh_token"]).json()
    with db_session(api.app) as session:
        session.get(RefreshToken, pair["refresh_token"].partition(".")[0]).expires_at = utcnow() - timedelta(seconds=1)
        session.commit()
    retry = _refresh(api, pair["refresh_token"])
    assert retry.status_code == 401 and "expired" in retry.json()["detail"]
    assert _refresh(api, successor["refresh_token"]).status_code == 200  # the successor already issued stays valid


@pytest.mark.parametrize("bad", ["garbage", "a" * 43 + ".secret", "nodot-but-long-enough", "x.y" * 3])
def test_unknown_refresh_tokens_are_401(api, bad):
    assert api.client.post("/auth/refresh", json={"refresh_token": bad}).status_code in (401, 422)


def test_refresh_reflects_a_role_change(api):
    user = api.create_user("bill1")
    pair = api.login("bill1").json()
    api.client.patch(f"/users/{user['id']}", json={"role": "dispatcher", "dispatch_area": "akola"}, headers=api.admin())
    new = api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    claims = jwt.decode(new["access_token"], options={"verify_signature": False})
    assert claims["role"] == "dispatcher" and claims["area"] == "akola"


def test_jwks_publishes_the_verifying_key(api):
    keys = api.client.get("/auth/jwks").json()["keys"]
    token = api.token(*ADMIN)
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in keys if k["kid"] == kid)
    assert jwk["alg"] == "EdDSA" and "d" not in jwk  # public half only
    key = jwt.PyJWK(jwk).key
    assert jwt.decode(token, key, algorithms=["EdDSA"], audience="bagtrack")["username"] == ADMIN[0]


def test_missing_token_is_401(api):
    response = api.client.get("/auth/me")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_expired_token_is_401(api):
    now = int(time.time())
    token = _sign(api, _claims(api, iat=now - 3600, exp=now - 60))
    response = api.client.get("/auth/me", headers=api.as_(token))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_tampered_token_is_401(api):
    token = api.token(*ADMIN)
    head, payload, sig = token.split(".")
    forged = _claims(api, role="admin", username="mallory")
    forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(forged).encode()).decode()
    assert api.client.get("/auth/me", headers=api.as_(f"{head}.{forged_payload}.{sig}")).status_code == 401


def test_alg_none_token_is_401(api):
    token = jwt.encode(_claims(api), None, algorithm="none")
    assert api.client.get("/auth/me", headers=api.as_(token)).status_code == 401


def test_token_signed_by_another_key_is_401(api):
    token = _sign(api, _claims(api), key=Ed25519PrivateKey.generate())
    assert api.client.get("/auth/me", headers=api.as_(token)).status_code == 401


@pytest.mark.parametrize("claim,value", [("aud", "someone-else"), ("iss", "evil"), ("typ", "refresh")])
def test_wrong_audience_issuer_or_type_is_401(api, claim, value):
    token = _sign(api, _claims(api, **{claim: value}))
    assert api.client.get("/auth/me", headers=api.as_(token)).status_code == 401


def test_non_bearer_authorization_is_401(api):
    assert api.client.get("/auth/me", headers={"Authorization": "Basic YWRtaW46eA=="}).status_code == 401
