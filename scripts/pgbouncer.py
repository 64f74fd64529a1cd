"""A pgbouncer in transaction mode in front of PostgreSQL: its configuration, rendered, and the command to run it.

Used by `make up PGBOUNCER=1` (scripts/fleet.py) and by tests/scale/test_pgbouncer.py. Debian's pgbouncer (1.18,
installed by scripts/ensure-tools.sh) has no prepared-statement tracking, so the services run with DB_PGBOUNCER=true
(shared/db.py: no statement kept across transactions). Each service's database gets its own entry, whose
`connect_query` sets that service's statement_timeout on every server connection pgbouncer opens: behind pgbouncer
the client's startup packet cannot carry it.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


def pgbouncer_binary() -> str | None:
    """Debian installs it under /usr/sbin, which is not on every PATH."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").is_file() else None


@dataclass(frozen=True)
class Bouncer:
    """One pgbouncer: where it listens, what it forwards to, and how many server connections it may open."""

    directory: Path
    port: int
    server_url: str  # any URL on the PostgreSQL server: its host, port and user are read
    pool_size: int  # server connections per database (pgbouncer's default_pool_size)
    timeouts: dict[str, int]  # database name -> statement_timeout (ms) set on its server connections
    max_client_conn: int = 2000

    @property
    def config(self) -> Path:
        return self.directory / "pgbouncer.ini"

    def url(self, url: str) -> str:
        """The same database, reached through this pgbouncer."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def write(self) -> Path:
        server = make_url(self.server_url)
        host, port, user = server.host or "127.0.0.1", server.port or 5432, server.username or "postgres"
        target = f"host={host} port={port}"
        databases = [f"{name} = {target} connect_query='SET statement_timeout = {ms}'"
                     for name, ms in sorted(self.timeouts.items())]
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "users.txt").write_text(f'"{user}" "{server.password or ""}"\n')
        self.config.write_text("\n".join([
            "; rendered by scripts/pgbouncer.py",
            "[databases]",
            *databases,
            f"* = {target}",  # migrations' CREATE DATABASE (through "postgres"), psql
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            # The server (trust on loopback here) authenticates; pgbouncer passes the user through.
            "auth_type = trust",
            f"auth_file = {self.directory / 'users.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "reserve_pool_size = 0",
            f"max_client_conn = {self.max_client_conn}",
            # Tracked by pgbouncer and set per server connection as each client asked (shared/db.py sends them).
            "ignore_startup_parameters = extra_float_digits",
            "server_lifetime = 3600",
            "server_idle_timeout = 60",
            "query_wait_timeout = 10",
            f"logfile = {self.directory / 'pgbouncer.log'}",
            "log_connections = 0",
            "log_disconnections = 0",
            "",
        ]))
        # pgbouncer refuses to run as root; started as `nobody`, it must read its files and write its log.
        for path in (self.directory, self.config, self.directory / "users.txt"):
            path.chmod(0o777 if path.is_dir() else 0o644)
        log = self.directory / "pgbouncer.log"
        log.touch()
        log.chmod(0o666)
        return self.config

    def command(self, binary: str, *, as_root: bool) -> list[str]:
        """Foreground (the recorded pid is pgbouncer's own); as root it drops to `nobody`."""
        return [binary, *(["-u", "nobody"] if as_root else []), str(self.config)]
