"""The auth app in-process (lifespan and all) on each backend, with its tables emptied between tests."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from services.auth import service
from services.auth.app import create_app
from services.auth.config import Settings
from services.auth.models import RefreshToken, User
from shared import migrate
from tests.support import db_session

ADMIN = ("admin", "Adm1n!pass")
PASSWORD = "Str0ng!pass"


def make_settings(backend, **overrides) -> Settings:
    values = dict(
        environment="test", shared_database_url=backend.database_url, redis_url=backend.redis_url,
        var_dir=backend.var_dir, access_log=False,
        # Cheap argon2 for speed; the production parameters are checked in test_passwords.py.
        argon2_time_cost=1, argon2_memory_kib=1024,
        admin_username=ADMIN[0], admin_password=ADMIN[1],
        login_limit_per_ip=40, max_dispatchers_per_area=2,
        # A small per-account ceiling: above the per-(username, client) limit of 5, reachable from two addresses.
        lockout_threshold=8,
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def auth_app(backend):
    settings = make_settings(backend)
    migrate.upgrade("auth", settings.database_url)
    app = create_app(settings)
    with TestClient(app) as client:
        yield client


@dataclass
class AuthApi:
    """Small builders over the HTTP API, so tests read as the steps a person takes."""

    client: TestClient
    _admin_headers: dict[str, str] | None = None

    @property
    def app(self):
        return self.client.app

    def login(self, username: str, password: str = PASSWORD, *, client: str | None = None):
        """Log in from the test client, or from the client address `client` (another peer on the same app)."""
        http = self.client if client is None else self.from_address(client)
        return http.post("/auth/login", json={"username": username, "password": password})

    def from_address(self, address: str) -> TestClient:
        """A client on the same running app (same event loop, same lifespan) whose peer address is `address`."""
        other = TestClient(self.app, client=(address, 50000))
        other.portal = self.client.portal
        return other

    def token(self, username: str, password: str = PASSWORD) -> str:
        response = self.login(username, password)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def as_(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def admin(self) -> dict[str, str]:
        if self._admin_headers is None:  # one login per test: logins are rate limited per username
            self._admin_headers = self.as_(self.token(*ADMIN))
        return self._admin_headers

    def create_user(self, username: str, role: str = "biller", area: str | None = None, **extra) -> dict:
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD, "role": role, **extra}
        if area:
            body["dispatch_area"] = area
        response = self.client.post("/users", json=body, headers=self.admin())
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def api(auth_app) -> AuthApi:
    app = auth_app.app
    with db_session(app) as session:
        session.execute(delete(RefreshToken))
        session.execute(delete(User))
        session.commit()
    auth_app.portal.call(lambda: service.ensure_first_admin(ctx=app.state.auth, username=ADMIN[0],
                                                            password=ADMIN[1], email=None))
    auth_app.portal.call(app.state.cache.clear)
    return AuthApi(auth_app)
