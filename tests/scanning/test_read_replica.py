"""A read replica that applies writes late (a second PostgreSQL database the test copies to by hand).

The guarantee "a read after a write is never stale" holds with it: the replica answers only while its measured
lag (a heartbeat row the service writes on the primary and reads back from the replica) is within
db_read_max_lag; a code written within that time is read from the primary; with Redis down, every read goes to
the primary.
"""
from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, pool, text

from services.scanning.app import create_app
from services.scanning.config import Settings
from shared import migrate
from shared.migrate import ensure_database_exists
from tests.scanning.conftest import KEY, ScanApi
from tests.support import free_port, wait_for

MAX_LAG = 3.0


@pytest.fixture
def replica(backend):
    if backend.database_url is None:
        pytest.skip("a read replica is a PostgreSQL deployment")
    primary = Settings(shared_database_url=backend.database_url).database_url
    replica_url = primary.replace("_scanning", "_scanning_replica")
    ensure_database_exists(replica_url)
    for url in (primary, replica_url):
        migrate.upgrade("scanning", url)
    engines = {name: create_engine(url, poolclass=pool.NullPool) for name, url in
               (("primary", primary), ("replica", replica_url))}
    with engines["replica"].begin() as conn:
        conn.execute(text("DELETE FROM replication_heartbeat"))
    clients: list[TestClient] = []

    def start(redis_url=backend.redis_url) -> TestClient:
        settings = Settings(environment="test", database_url=primary, database_read_url=replica_url,
                            db_read_max_lag=MAX_LAG, db_read_probe_interval=0.1, redis_url=redis_url,
                            var_dir=backend.var_dir, access_log=False,
                            auth_url=f"http://127.0.0.1:{free_port()}")
        client = TestClient(create_app(settings))
        client.__enter__()
        client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        clients.append(client)
        return client

    yield engines, start
    for client in clients:
        client.__exit__(None, None, None)
    for engine in engines.values():
        engine.dispose()


def apply_heartbeat_late(engines) -> None:
    """The replica catches up with the primary's heartbeat (and nothing else)."""
    with engines["primary"].connect() as source, engines["replica"].begin() as target:
        for source_name, beat_at in source.execute(text("SELECT source, beat_at FROM replication_heartbeat")):
            target.execute(text("INSERT INTO replication_heartbeat VALUES (:s, :b) "
                                "ON CONFLICT (source) DO UPDATE SET beat_at = excluded.beat_at"),
                           {"s": source_name, "b": beat_at})


def only_on_the_replica(engines) -> str:
    qr = f"SB{random.randrange(70000, 79999)}"
    with engines["replica"].begin() as conn:
        conn.execute(text("DELETE FROM bags WHERE qr_id = :qr"), {"qr": qr})
        conn.execute(text("INSERT INTO bags (qr_id, type, status, dispatch_area, capacity, child_count, created_by) "
                          "VALUES (:qr, 'parent', 'pending', 'jaipur', 30, 0, '11')"), {"qr": qr})
    return qr


def fresh_lookup(api: ScanApi, qr: str) -> int:
    api.client.portal.call(api.app.state.cache.clear)
    return api.bag(qr).status_code


def test_the_replica_answers_only_within_the_allowed_lag_and_never_for_a_code_just_written(replica):
    engines, start = replica
    api = ScanApi(start())
    db = api.app.state.db
    ghost = only_on_the_replica(engines)
    assert not db.replica_fresh and fresh_lookup(api, ghost) == 404  # lag unknown: the primary answers

    apply_heartbeat_late(engines)
    wait_for(lambda: db.replica_fresh, MAX_LAG + 5, "the replica to serve reads")
    assert fresh_lookup(api, ghost) == 200  # the replica answers now (only it has this bag)

    written = f"SB{random.randrange(60000, 69999)}"
    assert api.parent(written).status_code == 200  # on the primary; the replica never gets it
    assert api.bag(written).status_code == 200  # read after write: the primary, though the replica is "fresh"

    # Nothing applied for longer than MAX_LAG.
    wait_for(lambda: not db.replica_fresh, MAX_LAG + 5, "the replica to be bypassed")
    assert db.replica_lag > MAX_LAG
    assert fresh_lookup(api, ghost) == 404


def test_with_redis_down_every_read_goes_to_the_primary(replica):
    engines, start = replica
    api = ScanApi(start(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    db = api.app.state.db
    ghost = only_on_the_replica(engines)
    apply_heartbeat_late(engines)
    wait_for(lambda: db.replica_fresh, MAX_LAG + 5, "the replica to serve reads")
    assert api.bag(ghost).status_code == 404
    assert api.bag(ghost).status_code == 404
