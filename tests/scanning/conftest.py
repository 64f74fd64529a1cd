"""The scanning app in-process on each backend, with tokens from a test key."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

from services.scanning.app import create_app
from services.scanning.config import Settings
from services.scanning.models import Bag, Scan
from shared import migrate
from shared.unit_of_work import IDEMPOTENT_REQUESTS
from tests.support import db_session, free_port
from tests.tokens import SigningKey

KEY = SigningKey.generate("scanning-test")

# Who scans: (user id, username, role, area)
ADMIN = ("1", "boss", "admin", None)
BILLER = ("31", "bina", "biller", None)
JAIPUR = ("11", "jai", "dispatcher", "jaipur")
JAIPUR_2 = ("12", "jaya", "dispatcher", "jaipur")
AKOLA = ("21", "aki", "dispatcher", "akola")


@pytest.fixture(scope="session")
def scanning_app(backend):
    settings = Settings(environment="test", shared_database_url=backend.database_url, redis_url=backend.redis_url,
                        var_dir=backend.var_dir, access_log=False,
                        auth_url=f"http://127.0.0.1:{free_port()}")  # nobody there: keys are loaded below
    migrate.upgrade("scanning", settings.database_url)
    with TestClient(create_app(settings)) as client:
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        yield client


@dataclass
class ScanApi:
    """Builders over the HTTP API, so tests read as what a dispatcher does."""

    client: TestClient

    @property
    def app(self):
        return self.client.app

    def headers(self, who=JAIPUR, **extra) -> dict[str, str]:
        user_id, username, role, area = who
        return {"Authorization": f"Bearer {KEY.mint(sub=user_id, username=username, role=role, area=area)}", **extra}

    def parent(self, qr: str, who=JAIPUR, **body):
        return self.client.post("/scans/parent", json={"qr_id": qr, **body}, headers=self.headers(who))

    def child(self, parent_qr: str, child_qr: str, who=JAIPUR, headers: dict | None = None, **body):
        return self.client.post("/scans/child", json={"parent_qr": parent_qr, "child_qr": child_qr, **body},
                                headers={**self.headers(who), **(headers or {})})

    def bag(self, qr: str, who=JAIPUR):
        return self.client.get(f"/bags/{qr}", headers=self.headers(who))

    def unlink(self, parent_qr: str, child_qr: str, who=JAIPUR):
        return self.client.delete(f"/bags/{parent_qr}/children/{child_qr}", headers=self.headers(who))

    def fill(self, parent_qr: str, count: int, prefix: str = "CH", who=JAIPUR) -> list[str]:
        assert self.parent(parent_qr, who).status_code == 200
        children = [f"{prefix}{parent_qr[-5:]}{i:03d}" for i in range(count)]
        for child in children:
            assert self.child(parent_qr, child, who).status_code == 200
        return children

    def db_rows(self, model, **where):
        with db_session(self.app) as session:
            return session.query(model).filter_by(**where).all()


@pytest.fixture
def api(scanning_app) -> ScanApi:
    app = scanning_app.app
    with db_session(app) as session:
        session.execute(delete(IDEMPOTENT_REQUESTS))
        session.execute(delete(Scan))
        session.execute(update(Bag).values(parent_id=None))
        session.execute(delete(Bag))
        session.commit()
    scanning_app.portal.call(app.state.cache.clear)
    return ScanApi(scanning_app)
