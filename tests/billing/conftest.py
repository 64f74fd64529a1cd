"""Billing in-process on each backend, calling a real scanning process (through a TCP proxy a test can stop or
hang) on the same backend; parents are written straight into scanning's database."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, insert, pool, select, update

from services.billing.app import create_app
from services.billing.config import Settings
from services.billing.models import Bill, BillDayCounter, BillEvent, BillParent, MarkOutbox
from services.scanning.config import Settings as ScanningSettings
from services.scanning.models import Bag
from shared import migrate
from shared.unit_of_work import IDEMPOTENT_REQUESTS
from tests.gateway.conftest import running, uvicorn_command
from tests.support import TcpProxy, db_session, free_port
from tests.tokens import SigningKey

KEY = SigningKey.generate("billing-test")
ADMIN = ("1", "boss", "admin", None)
BILLER = ("31", "bina", "biller", None)
BILLER_2 = ("32", "biju", "biller", None)
DISPATCHER = ("11", "jai", "dispatcher", "jaipur")


def token_headers(who=BILLER, **extra) -> dict[str, str]:
    user_id, username, role, area = who
    return {"Authorization": f"Bearer {KEY.mint(sub=user_id, username=username, role=role, area=area)}", **extra}


@pytest.fixture(scope="session")
def scanning_db(backend):
    settings = ScanningSettings(environment="test", shared_database_url=backend.database_url, var_dir=backend.var_dir)
    migrate.upgrade("scanning", settings.database_url)
    engine = create_engine(settings.database_url, poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def scanning_proxy(backend, scanning_db, tmp_path_factory):
    env = {"BAGTRACK_ENV": "test", "BAGTRACK_VAR_DIR": backend.var_dir, "AUTH_URL": f"http://127.0.0.1:{free_port()}",
           "ACCESS_LOG": "false"}
    if backend.database_url:
        env.update(DATABASE_URL=backend.database_url, REDIS_URL=backend.redis_url)
    log = Path(tmp_path_factory.mktemp("scanning-log")) / "scanning.log"
    port = free_port()
    with running(uvicorn_command("services.scanning.app:create_app", port), port, env, log):
        proxy = TcpProxy("127.0.0.1", port).start()
        yield proxy
        proxy.close()


@pytest.fixture(scope="session")
def billing_app(backend, scanning_proxy):
    settings = Settings(environment="test", shared_database_url=backend.database_url, redis_url=backend.redis_url,
                        var_dir=backend.var_dir, access_log=False, auth_url=f"http://127.0.0.1:{free_port()}",
                        scanning_url=f"http://127.0.0.1:{scanning_proxy.port}", outbox_interval=0.2,
                        reconcile_interval=3600, breaker_min_calls=1000)
    migrate.upgrade("billing", settings.database_url)
    with TestClient(create_app(settings)) as client:
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        yield client


@dataclass
class BillApi:
    """The HTTP API as a biller uses it, plus scanning's database for arranging parents."""

    client: TestClient
    scanning_db: object
    proxy: TcpProxy

    @property
    def app(self):
        return self.client.app

    def create(self, who=BILLER, key: str | None = None, **body):
        body.setdefault("capacity", 2)
        headers = token_headers(who, **({"Idempotency-Key": key} if key else {}))
        return self.client.post("/bills", json=body, headers=headers)

    def new_bill(self, **body) -> str:
        response = self.create(**body)
        assert response.status_code == 201, response.text
        return response.json()["bill_id"]

    def get(self, bill_id: str, who=BILLER):
        return self.client.get(f"/bills/{bill_id}", headers=token_headers(who))

    def add(self, bill_id: str, qr: str, who=BILLER, key: str | None = None):
        headers = token_headers(who, **({"Idempotency-Key": key} if key else {}))
        return self.client.post(f"/bills/{bill_id}/bags", json={"parent_qr": qr}, headers=headers)

    def remove(self, bill_id: str, qr: str, who=BILLER, key: str | None = None):
        headers = token_headers(who, **({"Idempotency-Key": key} if key else {}))
        return self.client.delete(f"/bills/{bill_id}/bags/{qr}", headers=headers)

    def post(self, path: str, who=BILLER, **kw):
        return self.client.post(path, headers=token_headers(who), **kw)

    def parent(self, qr: str, children: int = 0, capacity: int = 30, area: str = "jaipur") -> str:
        """A parent bag in scanning's database (as if scanned), holding `children` (counted, not rows)."""
        with self.scanning_db.begin() as conn:
            conn.execute(insert(Bag.__table__).values(
                qr_id=qr, type="parent", status="in_progress" if children else "pending", dispatch_area=area,
                capacity=capacity, child_count=children, created_by="jai"))
        return qr

    def set_children(self, qr: str, children: int) -> None:
        with self.scanning_db.begin() as conn:
            conn.execute(update(Bag.__table__).where(Bag.__table__.c.qr_id == qr).values(child_count=children))

    def mark_of(self, qr: str):
        """(bill_id, link) of scanning's mark on a parent; None when the parent is gone."""
        with self.scanning_db.connect() as conn:
            row = conn.execute(select(Bag.__table__.c.bill_id, Bag.__table__.c.bill_link)
                               .where(Bag.__table__.c.qr_id == qr)).first()
        return None if row is None else tuple(row)

    def outbox(self) -> list:
        with db_session(self.app) as session:
            return list(session.execute(select(MarkOutbox.__table__)).mappings())


@pytest.fixture
def api(billing_app, scanning_db, scanning_proxy) -> BillApi:
    with db_session(billing_app.app) as session:
        for table in (BillParent, Bill, BillEvent, BillDayCounter, MarkOutbox):
            session.execute(delete(table))
        session.execute(delete(IDEMPOTENT_REQUESTS))
        session.commit()
    with scanning_db.begin() as conn:
        conn.execute(delete(Bag.__table__))
    return BillApi(billing_app, scanning_db, scanning_proxy)


@contextmanager
def scanning_down(api: BillApi, *, hung: bool = False) -> Iterator[None]:
    """Scanning refusing connections (or, `hung`, accepting them and answering nothing) until the block ends."""
    api.proxy.hang() if hung else api.proxy.stop()
    try:
        yield
    finally:
        api.proxy.hang(False) if hung else api.proxy.start()
