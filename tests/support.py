"""What the suites need from this machine: PostgreSQL and Redis, found or (without CI) skipped with a reason."""
from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time
from contextlib import closing, contextmanager
from typing import Iterator

import pytest
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from shared.migrate import upgrade

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(host: str, port: int) -> bool:
    with closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require(service: str, host: str, port: int) -> None:
    """Skip the test when a server is absent on a laptop; fail it in CI, where it must be there."""
    if reachable(host, port):
        return
    message = f"{service} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the suites that need it must run)")
    pytest.skip(f"{message}; start it to run these tests")


def require_postgres() -> None:
    url = make_url(PG_URL)
    require("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)


def require_redis() -> None:
    url = make_url(REDIS_URL.replace("redis://", "postgresql://"))  # only host/port are read
    require("Redis", url.host or "127.0.0.1", url.port or 6379)


def pg_database_url(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def seeded_pg_database(prefix: str, service: str, seed_sql: str) -> Iterator:
    """For a module fixture (`yield from`): a fresh PostgreSQL database of `service`, migrated, loaded with
    `seed_sql` and analysed, as an AUTOCOMMIT engine (plan checks); dropped afterwards."""
    require_postgres()
    drop_pg_databases(prefix)
    url = pg_database_url(f"{prefix}_{service}")
    upgrade(service, url)
    engine = create_engine(url, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(seed_sql))
            conn.execute(text("VACUUM ANALYZE"))
        yield engine
    finally:
        engine.dispose()
        drop_pg_databases(prefix)


def drop_pg_databases(prefix: str) -> None:
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    with engine.connect() as conn:
        names = conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "%"}).scalars()
        for name in list(names):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _ephemeral_low() -> int:
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port picked inside it (what binding port 0
    gives) can be taken by some outgoing connection's local end between the pick and the server's bind."""
    top = max(11000, _ephemeral_low() - 1)
    for _ in range(500):
        port = random.randrange(10000, top)
        with closing(socket.socket()) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def db_session(app) -> Iterator[Session]:
    """A plain (sync) session on an in-process app's own database, for arranging and checking rows in tests."""
    engine = create_engine(app.state.settings.database_url, poolclass=pool.NullPool)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


class TcpProxy:
    """A loopback TCP fault proxy to a real server: a test can stop it (refuse and cut every connection, like a
    database that went down) and start it again on the same port, hang it (a blackhole: connections stay open,
    nothing passes), slow it (`latency` seconds added to every chunk, each way) or cut the open connections while
    still accepting new ones (`drop`). Runs its own event loop in a thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.hung = False  # hang(): bytes are swallowed both ways, connections stay open (a server that froze)
        self.latency = 0.0  # slow(): seconds each chunk waits before it is passed on, in either direction
        self.refusing = False  # stop() until start(): even a connection accepted just before the stop is cut
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> "TcpProxy":
        async def pipe(reader, writer) -> None:
            try:
                while chunk := await reader.read(65536):
                    if self.hung:
                        continue
                    if self.latency:
                        await asyncio.sleep(self.latency)
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(client_reader, client_writer) -> None:
            if self.refusing:
                client_writer.transport.abort()
                return
            try:
                server_reader, server_writer = await asyncio.open_connection(*self.target)
            except OSError:
                client_writer.close()
                return
            if self.refusing:  # accepted just before stop() and connected after it: cut like the rest
                client_writer.transport.abort()
                server_writer.transport.abort()
                return
            self._writers.update((client_writer, server_writer))
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
            self._writers.difference_update((client_writer, server_writer))

        async def listen() -> None:
            self._server = await asyncio.start_server(handle, "127.0.0.1", self.port, reuse_address=True)

        self.refusing = False

        self._run(listen())
        return self

    def hang(self, hung: bool = True) -> None:
        """Accept and keep connections but answer nothing (`hang(False)` forwards again)."""
        self.hung = hung

    def slow(self, latency: float) -> None:
        """Delay every chunk by `latency` seconds each way (0: full speed again)."""
        self.latency = latency

    def drop(self) -> None:
        """Reset every open connection; new ones are still accepted (a network blip, a failover)."""
        async def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._run(cut())

    def stop(self) -> None:
        """Refuse new connections and reset the open ones."""
        async def shut() -> None:
            self.refusing = True
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._run(shut())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)


def metric_total(url: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples on one process's /metrics (`url`) whose labels include `labels`."""
    import httpx

    total = 0.0
    for line in httpx.get(url, timeout=5).text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(condition, timeout: float = 10.0, what: str = "condition"):
    """Poll `condition` until it returns something truthy (returned), or fail after `timeout` seconds saying `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def wait_for_lock_waiters(app, count: int = 1, timeout: float = 10.0) -> None:
    """Until `count` of the app's own sessions on its database wait on a lock: the requests a test sent have
    reached the rows it holds from another connection (how race tests order steps without sleeping)."""
    name = f"bagtrack-{app.state.settings.service_name}"
    deadline = time.monotonic() + timeout
    with db_session(app) as session:
        while time.monotonic() < deadline:
            waiting = session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                "AND datname = current_database() AND wait_event_type = 'Lock'"), {"name": name})
            if waiting >= count:
                return
            session.rollback()  # a fresh snapshot of pg_stat_activity
    pytest.fail(f"{count} request(s) never queued on the held rows")
