"""Races forced into their worst interleaving (PostgreSQL): the test holds the rows the requests need from a
connection of its own, waits until every request is queued on them, then lets go. The rules must hold however the
queue drains; nothing here depends on timing."""
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from services.auth.models import RefreshToken, User
from shared.timeutil import as_utc, utcnow
from tests.auth.conftest import ADMIN, PASSWORD
from tests.support import db_session, wait_for_lock_waiters

WRONG = "Wrong!pass1"


@pytest.fixture
def pg_api(api):
    if api.app.state.db.dialect != "postgresql":
        pytest.skip("row locks held across connections are PostgreSQL's; SQLite serialises every write")
    return api


def _hold_user_rows(session, *usernames: str) -> None:
    """Take the users' row locks in `session`'s transaction (released by its commit)."""
    session.execute(select(User).where(User.username_key.in_(usernames)).with_for_update()).all()


def _user(api, username: str) -> User:
    with db_session(api.app) as session:
        return session.scalar(select(User).where(User.username_key == username))


def test_two_admins_demoting_each_other_at_once_leave_one_active_admin(pg_api):
    api = pg_api
    second = api.create_user("admin2", role="admin")
    first_id = _user(api, ADMIN[0]).id
    second_headers = api.as_(api.token("admin2"))
    with db_session(api.app) as holder, ThreadPoolExecutor(2) as pool:
        # Both demotions read the rows and count two admins before either can write: the worst case.
        _hold_user_rows(holder, ADMIN[0], "admin2")
        demotions = [
            pool.submit(api.client.patch, f"/users/{second['id']}", json={"role": "biller"}, headers=api.admin()),
            pool.submit(api.client.patch, f"/users/{first_id}", json={"role": "biller"}, headers=second_headers),
        ]
        wait_for_lock_waiters(api.app, 2)
        holder.commit()
        responses = [demotion.result(timeout=10) for demotion in demotions]
    assert sorted(r.status_code for r in responses) == [200, 409], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 409)
    assert "last active admin" in refused.json()["detail"]
    with db_session(api.app) as session:
        admins = session.scalar(select(func.count()).select_from(User).where(User.role == "admin", User.is_active))
    assert admins == 1


@pytest.fixture
def lock_events(pg_api):
    """Every change of users.locked_until, recorded by a trigger for the length of one test."""
    statements = [
        "CREATE TABLE test_lock_events (user_id integer, locked_until timestamptz)",
        """CREATE FUNCTION test_record_lock() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO test_lock_events VALUES (NEW.id, NEW.locked_until); RETURN NEW; END $$""",
        """CREATE TRIGGER test_lock_events AFTER UPDATE ON users FOR EACH ROW
           WHEN (NEW.locked_until IS DISTINCT FROM OLD.locked_until) EXECUTE FUNCTION test_record_lock()""",
    ]
    with db_session(pg_api.app) as session:
        for statement in statements:
            session.execute(text(statement))
        session.commit()

    def locks_set() -> list:
        with db_session(pg_api.app) as session:
            return session.scalars(text("SELECT locked_until FROM test_lock_events WHERE locked_until IS NOT NULL")
                                   ).all()

    try:
        yield locks_set
    finally:
        with db_session(pg_api.app) as session:
            session.execute(text("DROP TRIGGER test_lock_events ON users"))
            session.execute(text("DROP FUNCTION test_record_lock()"))
            session.execute(text("DROP TABLE test_lock_events"))
            session.commit()


def test_parallel_wrong_passwords_lock_the_account_exactly_once(pg_api, lock_events):
    api = pg_api
    api.create_user("bill1")
    attempts = 10  # above the per-account lockout threshold of the test settings (8)
    with db_session(api.app) as holder, ThreadPoolExecutor(attempts) as pool:
        # Every attempt reads the account unlocked, then queues to count its failure.
        _hold_user_rows(holder, "bill1")
        logins = [pool.submit(api.login, "bill1", WRONG) for _ in range(attempts)]
        wait_for_lock_waiters(api.app, attempts)
        holder.commit()
        statuses = [login.result(timeout=10).status_code for login in logins]
    assert statuses == [401] * attempts
    user = _user(api, "bill1")
    # The eighth failure locks and restarts the count; the two that queued behind it met a locked account and
    # counted nothing: no second lock, and no failures carried over to after the lock.
    assert lock_events() == [user.locked_until]
    assert as_utc(user.locked_until) > utcnow() and user.failed_logins == 0


def test_a_right_password_queued_behind_the_failure_that_locks_does_not_lift_the_lock(pg_api):
    api = pg_api
    user_id = api.create_user("bill1")["id"]
    with db_session(api.app) as session:  # one failure short of the lockout threshold (8), in the current window
        user = session.get(User, user_id)
        user.failed_logins, user.failures_since = 7, utcnow()
        session.commit()
    with db_session(api.app) as holder, ThreadPoolExecutor(2) as pool:
        _hold_user_rows(holder, "bill1")
        failure = pool.submit(api.login, "bill1", WRONG)
        wait_for_lock_waiters(api.app, 1)  # row-lock waiters are served in order: the failure writes first
        success = pool.submit(api.login, "bill1", PASSWORD)
        wait_for_lock_waiters(api.app, 2)
        holder.commit()
        failed, succeeded = failure.result(timeout=10), success.result(timeout=10)
    assert failed.status_code == 401
    # Refused as bad credentials: a locked account answers like an unknown username.
    assert succeeded.status_code == 401, succeeded.text
    assert succeeded.json()["detail"] == failed.json()["detail"]
    user = _user(api, "bill1")
    assert as_utc(user.locked_until) > utcnow() + timedelta(minutes=14)
    with db_session(api.app) as session:  # and no session was issued
        assert session.scalar(select(func.count()).where(RefreshToken.user_id == user_id)) == 0


def _hold_family(session, raw_token: str) -> str:
    """Take the family's rotation lock (the advisory lock of repository.lock_family) in `session`'s transaction."""
    family_id = session.scalar(select(RefreshToken.family_id).where(RefreshToken.id == raw_token.partition(".")[0]))
    session.execute(select(func.pg_advisory_xact_lock(zlib.crc32(f"refresh:family:{family_id}".encode()))))
    return family_id


def test_a_first_use_and_its_retries_queued_together_all_succeed_and_keep_the_family(pg_api):
    api = pg_api
    pair = api.login(*ADMIN).json()
    with db_session(api.app) as holder, ThreadPoolExecutor(3) as pool:
        family_id = _hold_family(holder, pair["refresh_token"])
        refreshes = [pool.submit(api.client.post, "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                     for _ in range(3)]
        wait_for_lock_waiters(api.app, 3)
        holder.commit()
        responses = [refresh.result(timeout=10) for refresh in refreshes]
    assert [r.status_code for r in responses] == [200] * 3, [r.text for r in responses]
    with db_session(api.app) as session:
        family = session.scalars(select(RefreshToken).where(RefreshToken.family_id == family_id)).all()
    assert len(family) == 4 and all(t.revoked_at is None for t in family)


def test_a_retry_queued_with_a_logout_leaves_no_successor_alive(pg_api):
    api = pg_api
    pair = api.login(*ADMIN).json()
    successor = api.client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
    with db_session(api.app) as holder, ThreadPoolExecutor(2) as pool:
        family_id = _hold_family(holder, pair["refresh_token"])
        retry = pool.submit(api.client.post, "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        logout = pool.submit(api.client.post, "/auth/logout", json={"refresh_token": successor["refresh_token"]},
                             headers=api.as_(successor["access_token"]))
        wait_for_lock_waiters(api.app, 2)
        holder.commit()
        assert retry.result(timeout=10).status_code in (200, 401)
        assert logout.result(timeout=10).status_code == 204
    with db_session(api.app) as session:
        family = session.scalars(select(RefreshToken).where(RefreshToken.family_id == family_id)).all()
    assert family and all(t.revoked_at is not None for t in family)  # whichever ran first
