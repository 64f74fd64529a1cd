"""The dashboard in-process on each backend, reading a real scanning and a real billing process (each behind a TCP
proxy a test can stop or hang); what the tests scan and bill goes through those services' own HTTP APIs, with
tokens from a test key that a stand-in auth publishes. The services' databases are the suite's own
("<base>_dash_<service>"), never cleared: every number is checked against the whole table."""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, pool

from services.billing.config import Settings as BillingSettings
from services.dashboard.app import create_app
from services.dashboard.config import Settings
from services.dashboard.models import Part
from services.dashboard.held import Entry
from services.scanning.config import Settings as ScanningSettings
from shared import migrate
from shared.cache import RedisCache
from tests.gateway.conftest import running, uvicorn_command
from tests.support import TcpProxy, db_session, free_port, wait_for
from tests.tokens import SigningKey

KEY = SigningKey.generate("dashboard-test")
# Who asks: (user id, username, role, area)
ADMIN = ("1", "boss", "admin", None)
BILLER = ("31", "bina", "biller", None)
JAIPUR = ("11", "jai", "dispatcher", "jaipur")
AKOLA = ("21", "aki", "dispatcher", "akola")

# QR numbers from a base the other suites' fixtures do not use: their processes share the services' cache
# namespaces in Redis, and a bag one of them cached must never be taken for one of ours.
_numbers = itertools.count(60001)


def headers(who=BILLER) -> dict[str, str]:
    user_id, username, role, area = who
    return {"Authorization": f"Bearer {KEY.mint(sub=user_id, username=username, role=role, area=area)}"}


def new_parent(small: bool = False) -> str:
    """A parent QR no test has used (the services' data is kept across tests; caches may remember old codes):
    SB (30 children) or, `small`, M444- (15)."""
    return f"{'M444-' if small else 'SB'}{next(_numbers):05d}"


@dataclass(frozen=True)
class Where:
    """The suite's own databases and var dir, apart from every other suite's."""

    database_url: str | None
    redis_url: str | None
    var_dir: str

    def env(self) -> dict[str, str]:
        env = {"BAGTRACK_ENV": "test", "BAGTRACK_VAR_DIR": self.var_dir, "ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}
        if self.database_url:
            env.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url)
        return env


@pytest.fixture(scope="session")
def where(backend) -> Where:
    var_dir = str(Path(backend.var_dir) / "dash")
    return Where(backend.database_url and backend.database_url + "_dash", backend.redis_url, var_dir)


@pytest.fixture(scope="session")
def auth_url(tmp_path_factory) -> Iterator[str]:
    """A stand-in auth publishing the test key (tests.gateway.fake_upstream serves /auth/jwks)."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("dash-auth")) / "auth.log"
    with running(uvicorn_command("tests.gateway.fake_upstream:create_app", port), port,
                 {"FAKE_JWKS": json.dumps({"keys": [KEY.jwk()]})}, log, probe="/ready") as server:
        yield server.url


@dataclass
class Source:
    """A real service process: its own address (for its metrics), and the proxy the dashboard reaches it by."""

    name: str
    url: str
    proxy: TcpProxy
    database_url: str

    def engine(self):
        return create_engine(self.database_url, poolclass=pool.NullPool)

    def requests_to(self, route: str) -> int:
        """How many requests this process has answered on `route` (its own /metrics, all statuses)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("bagtrack_http_requests_total{") and f'route="{route}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    @contextmanager
    def down(self, *, hung: bool = False) -> Iterator[None]:
        """Refusing connections (or, `hung`, accepting them and answering nothing) until the block ends."""
        self.proxy.hang() if hung else self.proxy.stop()
        try:
            yield
        finally:
            self.proxy.hang(False) if hung else self.proxy.start()


@contextmanager
def _service(name: str, settings, env: dict[str, str], log_dir: Path) -> Iterator[Source]:
    migrate.upgrade(name, settings.database_url)
    port = free_port()
    with running(uvicorn_command(f"services.{name}.app:create_app", port), port, env, log_dir / f"{name}.log"):
        proxy = TcpProxy("127.0.0.1", port).start()
        try:
            yield Source(name, f"http://127.0.0.1:{port}", proxy, settings.database_url)
        finally:
            proxy.close()


@pytest.fixture(scope="session")
def sources(where, auth_url, tmp_path_factory) -> Iterator[dict[str, Source]]:
    """Scanning, and billing calling scanning directly (cutting the dashboard off scanning leaves billing be)."""
    log_dir = Path(tmp_path_factory.mktemp("dash-logs"))
    clear_namespaces(where.redis_url, ("scanning", "billing"))  # what other suites' processes left there
    common = dict(environment="test", shared_database_url=where.database_url, var_dir=where.var_dir)
    env = {**where.env(), "AUTH_URL": auth_url}
    with ExitStack() as stack:
        scanning = stack.enter_context(_service("scanning", ScanningSettings(**common), env, log_dir))
        billing = stack.enter_context(_service("billing", BillingSettings(**common),
                                               {**env, "SCANNING_URL": scanning.url}, log_dir))
        yield {"scanning": scanning, "billing": billing}


def dashboard_settings(where: Where, sources: dict[str, Source], auth_url: str, **overrides) -> Settings:
    """Short budgets so a failed refresh shows within a second; the breaker kept out of the way unless asked; the
    live stream's poller off (it would add its own calls to the ones these tests count: the stream is tested
    through the gateway in tests/e2e/test_dashboard_live.py)."""
    options = dict(environment="test", shared_database_url=where.database_url, redis_url=where.redis_url,
                   var_dir=where.var_dir, access_log=False, auth_url=auth_url,
                   scanning_url=f"http://127.0.0.1:{sources['scanning'].proxy.port}",
                   billing_url=f"http://127.0.0.1:{sources['billing'].proxy.port}",
                   refresh_timeout=0.5, lock_ttl=1.5, retry_after_failure=0.3, breaker_min_calls=1000,
                   stream_follow=False)
    return Settings(**{**options, **overrides})


@pytest.fixture(scope="session")
def dashboard_db(where, sources, auth_url) -> str:
    settings = dashboard_settings(where, sources, auth_url)
    migrate.upgrade("dashboard", settings.database_url)
    return settings.database_url


class Dash:
    """One dashboard replica in-process (restartable), and the HTTP APIs of its sources, as people use them."""

    def __init__(self, settings: Settings, sources: dict[str, Source]) -> None:
        self.settings = settings
        self.sources = sources
        self.scanning, self.billing = sources["scanning"], sources["billing"]
        self.client: TestClient | None = None
        self.start()

    # -- the replica ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client = TestClient(create_app(self.settings))
        self.client.__enter__()
        # Keys loaded at once (start-up's fetch from the stand-in auth may not have landed by the first request).
        self.client.app.state.verifier.load_jwks({"keys": [KEY.jwk()]})
        # A new process's first request pays ~20 ms once (token verification and the framework warming up); the
        # budgets measured are about sources, so that is paid here, on a request that asks no source (a 422).
        assert self.client.get("/dashboard/lookup/%20", headers=headers(ADMIN)).status_code == 422

    def stop(self) -> None:
        if self.client is not None:
            self.client.__exit__(None, None, None)
            self.client = None

    @property
    def app(self):
        return self.client.app

    def get(self, path: str, who=BILLER, **params) -> httpx.Response:
        return self.client.get(path, params=params, headers=headers(who))

    def timed(self, path: str, who=BILLER, **params) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = self.get(path, who, **params)
        return response, time.perf_counter() - started

    def body(self, path: str, who=BILLER, **params) -> dict:
        response = self.get(path, who, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def settled(self, path: str, who=BILLER, *, fields: tuple[str, ...], timeout: float = 10, **params) -> dict:
        """The answer once each of `fields` is a fresh part (what a dashboard shows after its first refresh)."""
        return wait_for(lambda: (body := self.body(path, who, **params)) and all(
            (body.get(f) or {}).get("status") == "fresh" for f in fields) and body, timeout, f"{fields} fresh")

    def age(self, key: str, seconds: float) -> None:
        """Make a held part `seconds` older in the shared cache, as if its ttl had run out meanwhile."""
        cache = self.app.state.cache

        async def older() -> None:
            entry = Entry.decode(await cache.get(key))
            assert entry is not None, f"{key} is not held"
            moved = Entry(entry.data, entry.as_of - seconds, entry.refreshed_at - seconds, entry.failed_at,
                          entry.failure, entry.restored)
            await cache.set(key, moved.encode(), 600)

        self.client.portal.call(older)

    def concurrently(self, path: str, count: int, who=BILLER) -> list[httpx.Response]:
        """`count` requests at once on the replica's own event loop."""
        app, token = self.app, headers(who)

        async def burst() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
                return await asyncio.gather(*(client.get(path, headers=token) for _ in range(count)))

        return self.client.portal.call(burst)

    def stored_parts(self) -> dict[str, dict]:
        """The dashboard's own table: key -> row."""
        with db_session(self.app) as session:
            return {row.key: row._asdict() for row in session.execute(Part.__table__.select())}

    # -- its sources, through their own APIs ---------------------------------------------------------------

    def scan_parent(self, qr: str, who=JAIPUR) -> dict:
        response = httpx.post(self.scanning.url + "/scans/parent", json={"qr_id": qr}, headers=headers(who))
        assert response.status_code == 200, response.text
        return response.json()

    def scan_child(self, parent: str, child: str, who=JAIPUR) -> dict:
        response = httpx.post(self.scanning.url + "/scans/child", json={"parent_qr": parent, "child_qr": child},
                              headers=headers(who))
        assert response.status_code == 200, response.text
        return response.json()

    def fill(self, children: int, who=JAIPUR, *, small: bool = False) -> tuple[str, list[str]]:
        """A new parent scanned with `children` new children; (its QR, the children's)."""
        parent = new_parent(small)
        self.scan_parent(parent, who)
        kids = [f"C{parent[-5:]}K{i:03d}" for i in range(children)]
        for kid in kids:
            self.scan_child(parent, kid, who)
        return parent, kids

    def new_bill(self, capacity: int = 2, who=BILLER) -> str:
        response = httpx.post(self.billing.url + "/bills", json={"capacity": capacity}, headers=headers(who))
        assert response.status_code == 201, response.text
        return response.json()["bill_id"]

    def add_to_bill(self, bill_id: str, parent: str, who=BILLER) -> None:
        response = httpx.post(self.billing.url + f"/bills/{bill_id}/bags", json={"parent_qr": parent},
                              headers=headers(who), timeout=10)
        assert response.status_code in (200, 201), response.text

    def complete_bill(self, bill_id: str, who=BILLER) -> None:
        response = httpx.post(self.billing.url + f"/bills/{bill_id}/complete", headers=headers(who))
        assert response.status_code == 200, response.text


def clear_namespaces(redis_url: str | None, namespaces: tuple[str, ...]) -> None:
    """Drop these cache namespaces in Redis (nothing else there)."""
    async def clear() -> None:
        for namespace in namespaces:
            cache = RedisCache(redis_url, namespace)
            await cache.clear()
            await cache.aclose()

    if redis_url:
        asyncio.run(clear())


def clear_dashboard_cache(settings: Settings) -> None:
    """Drop the dashboard's namespace only (the services keep theirs), as if its Redis had restarted."""
    clear_namespaces(settings.redis_url, ("dashboard",))


@pytest.fixture
def dash(where, sources, auth_url, dashboard_db) -> Iterator[Dash]:
    """A fresh replica: nothing held, in the cache or in its table."""
    settings = dashboard_settings(where, sources, auth_url)
    engine = create_engine(dashboard_db, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.execute(delete(Part.__table__))
    engine.dispose()
    clear_dashboard_cache(settings)
    replica = Dash(settings, sources)
    try:
        yield replica
    finally:
        replica.stop()

