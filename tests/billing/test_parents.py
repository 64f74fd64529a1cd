"""Billing answers which bill holds a parent (scanning asks before deleting one)."""
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from services.billing.app import create_app
from services.billing.config import Settings
from services.billing.models import Bill, BillParent
from shared import migrate
from tests.support import free_port
from tests.tokens import SigningKey
from tests.support import db_session

KEY = SigningKey.generate("billing-test")


@pytest.fixture(scope="module")
def client(backend):
    settings = Settings(environment="test", shared_database_url=backend.database_url, redis_url=backend.redis_url,
                        var_dir=backend.var_dir, access_log=False, auth_url=f"http://127.0.0.1:{free_port()}")
    migrate.upgrade("billing", settings.database_url)
    with TestClient(create_app(settings)) as c:
        c.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        with db_session(c.app) as session:
            session.execute(delete(BillParent))
            session.execute(delete(Bill))
            bill = Bill(bill_id="BILL-20261128-0001", bill_key="BILL-20261128-0001", capacity=10, status="processing",
                        created_by="bina")
            session.add(bill)
            session.flush()
            session.add(BillParent(bill_pk=bill.id, parent_qr="SB00001", capacity=30, child_count=30, added_by="bina"))
            session.commit()
        yield c


def headers():
    return {"Authorization": f"Bearer {KEY.mint(sub='31', username='bina', role='biller', area=None)}"}


def test_a_parent_on_a_bill_names_it(client):
    response = client.get("/bills/parents/sb00001", headers=headers())
    assert response.json() == {"parent_qr": "SB00001", "bill_id": "BILL-20261128-0001"}


def test_a_parent_on_no_bill_is_null_not_404(client):
    assert client.get("/bills/parents/SB00002", headers=headers()).json() == {"parent_qr": "SB00002", "bill_id": None}


def test_the_question_needs_a_token(client):
    assert client.get("/bills/parents/SB00001").status_code == 401
