"""The hourly purge of expired and revoked refresh tokens: old rows go in batches, live and recent ones stay."""
import secrets
from datetime import timedelta
from functools import partial

from sqlalchemy import select

from services.auth import app as auth_app_module
from services.auth.models import RefreshToken, User
from services.auth.service import purge_old_refresh_tokens
from shared.timeutil import utcnow
from tests.auth.conftest import ADMIN
from tests.support import db_session


def _seed(api, **rows_by_kind) -> dict[str, set[str]]:
    """Refresh tokens of the admin, `count` per kind: {kind: (count, expires_at, revoked_at, used_at)}."""
    ids: dict[str, set[str]] = {}
    with db_session(api.app) as session:
        user_id = session.scalar(select(User.id).where(User.username_key == ADMIN[0]))
        for kind, (count, expires_at, revoked_at, used_at) in rows_by_kind.items():
            family = secrets.token_urlsafe(24)
            for _ in range(count):
                token_id = secrets.token_urlsafe(24)
                session.add(RefreshToken(id=token_id, family_id=family, user_id=user_id, secret_hash="0" * 64,
                                         expires_at=expires_at, revoked_at=revoked_at, used_at=used_at))
                ids.setdefault(kind, set()).add(token_id)
        session.commit()
    return ids


def _remaining(api) -> set[str]:
    with db_session(api.app) as session:
        return set(session.scalars(select(RefreshToken.id)))


def test_the_purge_deletes_only_tokens_expired_or_revoked_before_the_grace_period(api):
    now = utcnow()
    long_ago, lately, later = now - timedelta(days=3), now - timedelta(hours=2), now + timedelta(days=7)
    ids = _seed(api,
                expired_long_ago=(4, long_ago, None, None),
                rotated_and_expired_long_ago=(2, long_ago, None, long_ago - timedelta(days=1)),
                revoked_long_ago=(3, later, long_ago, None),
                expired_lately=(2, lately, None, None),   # within the 24 h grace: a replay still says "expired"
                revoked_lately=(2, later, lately, None),  # within the grace: still answered "revoked"
                live=(2, later, None, None),
                rotated_but_live=(2, later, None, now))   # kept: it is what recognises a replay as reuse
    before = _remaining(api)
    removed = api.client.portal.call(partial(purge_old_refresh_tokens, api.app, batch=2))  # 5 batches: 2+2+2+2+1
    assert removed == 9
    gone = ids["expired_long_ago"] | ids["rotated_and_expired_long_ago"] | ids["revoked_long_ago"]
    assert _remaining(api) == before - gone
    assert api.client.portal.call(partial(purge_old_refresh_tokens, api.app, batch=2)) == 0


def test_the_grace_period_is_a_setting(api, monkeypatch):
    now = utcnow()
    ids = _seed(api, expired_lately=(1, now - timedelta(hours=2), None, None),
                revoked_lately=(1, now + timedelta(days=1), now - timedelta(hours=2), None))
    monkeypatch.setattr(api.app.state.auth.settings, "refresh_purge_grace_hours", 1)
    assert api.client.portal.call(partial(purge_old_refresh_tokens, api.app)) == 2
    assert not (_remaining(api) & (ids["expired_lately"] | ids["revoked_lately"]))


def test_a_live_login_survives_the_purge(api):
    pair = api.login(*ADMIN).json()
    assert api.client.portal.call(partial(purge_old_refresh_tokens, api.app)) == 0
    assert api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 200


def test_the_auth_app_runs_the_purge_hourly(monkeypatch):
    captured = {}

    def fake_create_service_app(settings, **options):
        captured.update(options)
        return object()

    monkeypatch.setattr(auth_app_module, "create_service_app", fake_create_service_app)
    auth_app_module.create_app(auth_app_module.Settings(environment="test"))
    [job] = [job for job in captured["jobs"] if job.run is purge_old_refresh_tokens]
    assert job.every == 3600
