"""The scaled system as local processes behind one real nginx: `make up`, `make ps`, `make down`,
`make restart SERVICE=…` (docs/scale-out.md).

- Replicas: every tier (the four services and the gateway) runs as N processes on loopback ports of their own;
  bare `make up` runs DEFAULT_SCALE, `make up SCALE="scanning=3 billing=2"` chooses.
- nginx (deploy/nginx/local.conf.template, rendered into var/up/nginx/): the public edge over the gateway
  replicas, plus one internal listener per service that every caller (the gateway, billing, the dashboard) uses
  instead of a replica's own address: service-to-service calls are balanced over the replicas too.
- Storage must be shared by the replicas: PostgreSQL and Redis (the URLs given, else the local ones). SQLite
  is refused.
- Pool sizes come from the connection budget (`budget`): the replicas' pools together fit PostgreSQL's
  max_connections with headroom. `PGBOUNCER=1` puts Debian's pgbouncer (transaction mode, scripts/pgbouncer.py)
  between the replicas and PostgreSQL: then pgbouncer's per-database pools are what the budget sizes.
- Every process started is recorded (pid, the kernel's start time of that pid, command) in var/up/fleet.json;
  `down` and `restart` signal exactly those processes, and only while the pid still is the recorded process
  (a pid reused by something else after a crash is left alone). Never a name pattern.
- `restart` replaces one tier's replicas one at a time, surge first: the new replica starts on the tier's spare
  port and is ready before the old one leaves nginx's upstream (reload); the old one is then told to stop
  (SIGTERM: it drains, shared/drain.py) and waited for. Capacity never drops below N, a 1-replica tier included.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from scripts.pgbouncer import Bouncer, pgbouncer_binary
from scripts.stack import ROOT, gateway_command, service_command
from shared.settings import ServiceSettings
from shared.topology import SERVICES

TIERS = (*SERVICES, "gateway")
# Two of everything: any one replica can die or be restarted while its twin serves (a tier of one cannot).
DEFAULT_SCALE = {"auth": 2, "scanning": 2, "billing": 2, "dashboard": 2, "gateway": 2}
MAX_REPLICAS = 5  # per tier: ten ports a tier, half of them spare for a restart's surge
NGINX_KINDS = ("edge", "internal")  # the two nginx processes (deploy/nginx/local.conf.template), slot 0 and 1
STATE_DIR = ROOT / "var" / "up"
TEMPLATE = ROOT / "deploy" / "nginx" / "local.conf.template"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bagtrack"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POOL = 10  # ServiceSettings.db_pool_size
BOUNCER_POOL = 20  # pgbouncer's server connections per database, at most
STOP_TIMEOUT = 20.0  # a replica's drain (uvicorn's graceful 5 s, streams, lifespan) before SIGKILL
HOST = "127.0.0.1"


class FleetError(RuntimeError):
    """Something the operator must fix; printed without a traceback."""


def parse_scale(text: str | None) -> dict[str, int]:
    """`"scanning=3 billing=2"` (spaces or commas) over DEFAULT_SCALE."""
    scale = dict(DEFAULT_SCALE)
    for item in (text or "").replace(",", " ").split():
        name, _, count = item.partition("=")
        if name not in TIERS or not count.isdigit():
            raise FleetError(f"SCALE item {item!r}: expected <tier>=<n> with a tier among {', '.join(TIERS)}")
        if not 1 <= int(count) <= MAX_REPLICAS:
            raise FleetError(f"SCALE {name}={count}: between 1 and {MAX_REPLICAS} replicas per tier")
        scale[name] = int(count)
    return scale


@dataclass(frozen=True)
class Layout:
    """Ports, all on loopback: the edge; from `base`, the internal listeners (base+1.. per service) and pgbouncer
    (base+5), then ten ports per tier (replica i on slot i or, during a restart, i+5) and the gateways' ops ports
    (base+60..)."""

    edge: int = 8080
    base: int = 8100

    def internal(self, service: str) -> int:
        return self.base + 1 + SERVICES.index(service)

    @property
    def pgbouncer(self) -> int:
        return self.base + 5

    def slot(self, tier: str, slot: int) -> int:
        return self.base + 10 * (TIERS.index(tier) + 1) + slot

    def ops(self, slot: int) -> int:
        return self.base + 60 + slot

    def internal_url(self, service: str) -> str:
        return f"http://{HOST}:{self.internal(service)}"


# --- budget -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """PostgreSQL connections: what the server allows, what is kept back, and each replica's pool."""

    max_connections: int
    reserved: int  # superuser_reserved_connections
    headroom: int  # migrations, seeding, psql, monitoring, a replica's surge twin during a restart
    replicas: int  # processes with a database pool
    pool: int  # per replica: db_pool_size (overflow 0)

    PER_PROCESS_EXTRA = 1  # the readiness ping's own connection (shared/db.py)

    @property
    def client_pool(self) -> int:
        """Each replica's db_pool_size: its whole share, PostgreSQL being reached directly."""
        return self.pool

    @property
    def used(self) -> int:
        # A restart runs one replica more than the scale for a moment (the surge): counted.
        return (self.replicas + 1) * (self.pool + self.PER_PROCESS_EXTRA)

    @classmethod
    def plan(cls, max_connections: int, reserved: int, replicas: int, *, wanted: int = DEFAULT_POOL) -> "Budget":
        headroom = max(10, max_connections // 5)
        per_process = (max_connections - reserved - headroom) // (replicas + 1)
        pool = min(wanted, per_process - cls.PER_PROCESS_EXTRA)
        if pool < 2:
            raise FleetError(f"{replicas} replicas with a database do not fit PostgreSQL's max_connections="
                             f"{max_connections} ({reserved} reserved, {headroom} headroom): each would get a pool of "
                             f"{pool}. Fewer replicas, a larger max_connections, or pgbouncer (docs/scale-out.md)")
        return cls(max_connections, reserved, headroom, replicas, pool)

    def describe(self) -> str:
        return (f"{self.replicas} replicas x pool {self.pool} (+{self.PER_PROCESS_EXTRA} readiness) + one restart "
                f"surge = {self.used} of max_connections {self.max_connections} ({self.reserved} reserved, "
                f"{self.headroom} headroom)")


@dataclass(frozen=True)
class BouncerBudget:
    """Behind pgbouncer: PostgreSQL sees pgbouncer's pools (one per service database), whatever the replicas."""

    max_connections: int
    reserved: int
    headroom: int
    databases: int
    pool: int  # pgbouncer's default_pool_size: server connections per database
    client_pool: int  # each replica's db_pool_size (client connections to pgbouncer)

    @property
    def used(self) -> int:
        return self.databases * self.pool

    @classmethod
    def plan(cls, max_connections: int, reserved: int, databases: int, *, client_pool: int = DEFAULT_POOL,
             cap: int = BOUNCER_POOL) -> "BouncerBudget":
        headroom = max(10, max_connections // 5)
        pool = min(cap, (max_connections - reserved - headroom) // databases)
        if pool < 2:
            raise FleetError(f"{databases} databases behind pgbouncer do not fit max_connections={max_connections}")
        return cls(max_connections, reserved, headroom, databases, pool, client_pool)

    def describe(self) -> str:
        return (f"pgbouncer: {self.databases} databases x {self.pool} server connections = {self.used} of "
                f"max_connections {self.max_connections} ({self.reserved} reserved, {self.headroom} headroom); "
                f"each replica's pool {self.client_pool} to pgbouncer")


def server_limits(database_url: str) -> tuple[int, int]:
    import psycopg2

    url = make_url(database_url)
    conn = psycopg2.connect(host=url.host or HOST, port=url.port or 5432, user=url.username or "postgres",
                            password=url.password, dbname="postgres", connect_timeout=3)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('max_connections')::int, "
                        "current_setting('superuser_reserved_connections')::int")
            return cur.fetchone()
    finally:
        conn.close()


# --- processes ------------------------------------------------------------------------------------------

def start_ticks(pid: int) -> int | None:
    """When the kernel started `pid` (clock ticks since boot): with the pid, what names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait is missing
        return None
    return int(fields[19])


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@dataclass
class Proc:
    """One recorded process: a replica of a tier, nginx (tier "nginx") or pgbouncer (tier "pgbouncer")."""

    tier: str
    slot: int
    port: int
    pid: int
    ticks: int
    cmd: list[str]
    log: str
    ops_port: int | None = None

    @property
    def name(self) -> str:
        if self.tier == "pgbouncer":
            return "pgbouncer"
        return f"nginx-{NGINX_KINDS[self.slot]}" if self.tier == "nginx" else f"{self.tier}-{self.slot}"

    def alive(self) -> bool:
        """Running, and still the very process recorded (not a later one given the same pid)."""
        return start_ticks(self.pid) == self.ticks

    def send(self, sig: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            _reap(self.pid)
            time.sleep(0.05)
        _reap(self.pid)
        return True

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> str:
        if not self.send(sig):
            return "not running"
        if self.wait_gone(timeout):
            return "stopped"
        self.send(signal.SIGKILL)
        self.wait_gone(5)
        return f"killed (did not exit within {timeout:g} s)"

    def probe(self, path: str = "/ready") -> str:
        """Where this process answers its ops routes (/ready, /metrics): a gateway on its ops port."""
        return f"http://{HOST}:{self.ops_port or self.port}{path}"


def _reap(pid: int) -> None:
    """Collect our own exited child, if it is one (when `make restart` started it), so it is not left a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def launch(tier: str, slot: int, cmd: list[str], *, port: int, env: dict[str, str], log_dir: Path,
           ops_port: int | None = None) -> Proc:
    """Start a process that outlives `make up` (own session, output to its log), and record who it is."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / (f"nginx-{NGINX_KINDS[slot]}.log" if tier == "nginx" else
                     "pgbouncer.log" if tier == "pgbouncer" else f"{tier}-{slot}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    ticks = None
    for _ in range(100):
        ticks = start_ticks(proc.pid)
        if ticks is not None:
            break
        time.sleep(0.01)
    if ticks is None:
        raise FleetError(f"{tier}-{slot} exited at once: see {log}")
    return Proc(tier, slot, port, proc.pid, ticks, cmd, str(log), ops_port)


# --- the fleet --------------------------------------------------------------------------------------------

@dataclass
class Fleet:
    """A running scaled system, as recorded in `state_dir`/fleet.json."""

    layout: Layout
    scale: dict[str, int]
    env: dict[str, str]
    budget: dict | None = None
    procs: list[Proc] = field(default_factory=list)
    state_dir: Path = STATE_DIR

    # -- state

    @classmethod
    def load(cls, state_dir: Path = STATE_DIR) -> "Fleet | None":
        path = state_dir / "fleet.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(layout=Layout(**data["layout"]), scale=data["scale"], env=data["env"], budget=data.get("budget"),
                   procs=[Proc(**p) for p in data["procs"]], state_dir=state_dir)

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"layout": asdict(self.layout), "scale": self.scale, "env": self.env, "budget": self.budget,
                "procs": [asdict(p) for p in self.procs]}
        tmp = self.state_dir / "fleet.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_dir / "fleet.json")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    def nginx_dir(self, kind: str) -> Path:
        return self.state_dir / "nginx" / kind

    def replicas(self, tier: str) -> list[Proc]:
        return sorted((p for p in self.procs if p.tier == tier), key=lambda p: p.slot % MAX_REPLICAS)

    def nginx(self, kind: str) -> Proc | None:
        return next((p for p in self.procs if p.tier == "nginx" and NGINX_KINDS[p.slot] == kind), None)

    def url(self) -> str:
        return f"http://{HOST}:{self.layout.edge}"

    @property
    def bouncer(self) -> Bouncer | None:
        """The pgbouncer this fleet runs (PGBOUNCER=1), else None."""
        if not self.env.get("BAGTRACK_FLEET_DATABASE_URL"):
            return None
        server = self.env["BAGTRACK_FLEET_DATABASE_URL"]
        base = make_url(server).database or "bagtrack"
        timeouts = {f"{base}_{service}": int(self.env.get(f"{service.upper()}_DB_STATEMENT_TIMEOUT_MS") or
                                             ServiceSettings.model_fields["db_statement_timeout_ms"].default)
                    for service in SERVICES}
        return Bouncer(self.state_dir / "pgbouncer", self.layout.pgbouncer, server, pool_size=self.budget["pool"],
                       timeouts=timeouts)

    def start_pgbouncer(self) -> None:
        bouncer = self.bouncer
        binary = pgbouncer_binary()
        if binary is None:
            raise FleetError("PGBOUNCER=1 needs pgbouncer: `make tools` installs it (Debian's package)")
        bouncer.write()
        cmd = bouncer.command(binary, as_root=os.geteuid() == 0)
        self.procs.append(launch("pgbouncer", 0, cmd, port=bouncer.port, env=self.process_env(),
                                 log_dir=self.log_dir))
        wait_until(lambda: _listening(bouncer.port), 10, f"pgbouncer listening on {bouncer.port}")

    # -- environment

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONPATH", str(ROOT))
        env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # as scripts/stack.py (auth's argon2 buffers)
        direct = self.env.get("BAGTRACK_FLEET_INTERNAL") == "direct"
        for service in SERVICES:
            # "direct" (one replica per service only): callers reach the replica itself, not the internal nginx;
            # kept to measure what the internal hop costs (docs/scale-out.md), not for running.
            env[f"{service.upper()}_URL"] = (f"http://{HOST}:{self.layout.slot(service, 0)}" if direct
                                             else self.layout.internal_url(service))
        return env

    # -- nginx

    def render(self, kind: str, *, leaving: Proc | None = None) -> str:
        """nginx `kind`'s configuration for the replicas recorded now, without `leaving` (a restart's old one)."""
        upstreams, internal = [], []
        for tier in (("gateway",) if kind == "edge" else SERVICES):
            # A tier not started yet (make up starts them in turn) is listed at its planned ports.
            ports = ([p.port for p in self.replicas(tier) if p is not leaving]
                     or [self.layout.slot(tier, slot) for slot in range(self.scale[tier])])
            lines = [f"    upstream {tier} {{", "        least_conn;"]
            lines += [f"        server {HOST}:{port} max_fails=2 fail_timeout=5s;" for port in ports]
            lines += ["        keepalive 32;", "        keepalive_requests 100000;", "        keepalive_timeout 60s;",
                      "    }"]
            upstreams.append("\n".join(lines))
        for service in (() if kind == "edge" else SERVICES):
            internal.append(f"""    server {{
        listen {HOST}:{self.layout.internal(service)} backlog=4096;
        client_max_body_size 2m;
        keepalive_timeout 65s;
        keepalive_requests 100000;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_buffering off;
        proxy_connect_timeout 1s;
        proxy_send_timeout 15s;
        proxy_read_timeout 3600s;      # the callers keep their own budgets (5 s; 60 s between stream events)
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 2;
        location / {{
            proxy_pass http://{service};
        }}
    }}""")
        text = TEMPLATE.read_text()
        if kind != "edge":
            text = re.sub(r"(?ms)^    # @EDGE begin\n.*?^    # @EDGE end\n", "", text)
        for marker, value in (("@UPSTREAMS@", "\n".join(upstreams)), ("@INTERNAL@", "\n".join(internal)),
                              ("@PREFIX@", str(self.nginx_dir(kind))), ("@LOG_DIR@", str(self.log_dir)),
                              ("@KIND@", kind), ("@WORKERS@", "2" if kind == "edge" else "1"),
                              ("@HOST@", HOST), ("@EDGE_PORT@", str(self.layout.edge))):
            text = text.replace(marker, value)
        return text

    def write_nginx_conf(self, kind: str, *, leaving: Proc | None = None) -> Path:
        prefix = self.nginx_dir(kind)
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(self.render(kind, leaving=leaving))
        check = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(prefix), "-c", str(conf)],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise FleetError(f"nginx refused {conf}:\n{check.stderr}")
        return conf

    def start_nginx(self, kind: str) -> None:
        conf = self.write_nginx_conf(kind)
        cmd = [nginx_binary(), "-p", str(self.nginx_dir(kind)), "-c", str(conf),
               "-e", str(self.log_dir / f"nginx-{kind}-error.log")]
        port = self.layout.edge if kind == "edge" else self.layout.internal(SERVICES[0])
        self.procs.append(launch("nginx", NGINX_KINDS.index(kind), cmd, port=port, env=self.process_env(),
                                 log_dir=self.log_dir))
        wait_until(lambda: _listening(port), 10, f"nginx ({kind}) listening on {port}")

    def reload_nginx(self, kind: str, *, leaving: Proc | None = None) -> None:
        """New configuration, new workers: wait until they run (the old ones finish their requests and go)."""
        nginx = self.nginx(kind)
        if nginx is None or not nginx.alive():
            raise FleetError(f"nginx ({kind}) is not running: make down, then make up")
        self.write_nginx_conf(kind, leaving=leaving)
        before = children(nginx.pid)
        nginx.send(signal.SIGHUP)
        wait_until(lambda: bool(children(nginx.pid) - before), 10, "nginx's new workers")
        time.sleep(0.2)  # the old workers have stopped accepting by the time the new ones run; a margin

    # -- replicas

    def start_replica(self, tier: str, slot: int) -> Proc:
        port = self.layout.slot(tier, slot)
        if tier == "gateway":
            ops = self.layout.ops(slot)
            cmd = [sys.executable, *gateway_command(HOST, port, ops)]
        else:
            ops = None
            cmd = [sys.executable, *service_command(tier, HOST, port)]
        proc = launch(tier, slot, cmd, port=port, env=self.process_env(), log_dir=self.log_dir, ops_port=ops)
        self.procs.append(proc)
        return proc

    def wait_ready(self, procs: list[Proc], timeout: float = 60.0) -> None:
        pending = list(procs)
        deadline = time.monotonic() + timeout
        while pending:
            for proc in list(pending):
                if not proc.alive():
                    raise FleetError(f"{proc.name} exited: see {proc.log}")
                if _get(proc.probe()) == 200:
                    pending.remove(proc)
            if time.monotonic() > deadline:
                raise FleetError(f"not ready after {timeout:g} s: {', '.join(p.name for p in pending)} "
                                 f"(logs in {self.log_dir})")
            time.sleep(0.1)

    def migrate(self, services: tuple[str, ...] = SERVICES) -> None:
        """Once per service, before its replicas start (expand/contract keeps the running ones working)."""
        run = subprocess.run([sys.executable, "-m", "shared.migrate", *services], cwd=ROOT, env=self.process_env(),
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise FleetError(f"migrations failed:\n{run.stdout}{run.stderr}")

    # -- the operations

    def up(self, *, ready_timeout: float = 90.0) -> None:
        self.save()  # recorded from the first process on, so a failed start can still be taken down
        try:
            if self.bouncer is not None:
                self.start_pgbouncer()  # migrations go through it too (their lock is transaction-scoped)
                self.save()
            self.migrate()
            self.start_nginx("internal")  # the services reach each other through it
            self.save()
            # One tier at a time, in the order they call each other (auth's JWKS first, then scanning, which
            # billing and the dashboard call as they start): a call to a tier still starting is refused, and
            # nginx would then keep that tier's replicas out of its upstream for fail_timeout (5 s) after they
            # are up.
            for tier in SERVICES:
                started = [self.start_replica(tier, slot) for slot in range(self.scale[tier])]
                self.save()
                self.wait_ready(started, ready_timeout)
            gateways = [self.start_replica("gateway", slot) for slot in range(self.scale["gateway"])]
            self.save()
            self.start_nginx("edge")  # its upstream lists the gateways (ready or not: nginx retries the next)
            self.save()
            self.wait_ready(gateways, ready_timeout)
        except BaseException:
            self.save()
            raise

    def restart(self, tier: str, *, ready_timeout: float = 60.0, say=print) -> None:
        """Replace `tier`'s replicas one at a time, surge first (module docstring)."""
        if tier not in TIERS:
            raise FleetError(f"SERVICE={tier!r}: one of {', '.join(TIERS)}")
        kind = "edge" if tier == "gateway" else "internal"
        if tier != "gateway":
            self.migrate((tier,))
        for old in self.replicas(tier):
            new_slot = (old.slot + MAX_REPLICAS) % (2 * MAX_REPLICAS)
            started = time.monotonic()
            new = self.start_replica(tier, new_slot)
            self.save()
            self.wait_ready([new], ready_timeout)
            self.reload_nginx(kind, leaving=old)  # the new replica in, the old one out
            outcome = old.stop()
            self.procs.remove(old)
            self.save()
            self.write_nginx_conf(kind)  # the file matches what runs (same servers as the reload above)
            say(f"{old.name} (pid {old.pid}, port {old.port}) -> {new.name} (pid {new.pid}, port {new.port}): "
                f"old {outcome}, {time.monotonic() - started:.1f} s")

    def down(self, say=print) -> None:
        """Stop every recorded process: the edge first (no new requests), then the rest together (each drains),
        the internal nginx and pgbouncer last (the draining replicas still call each other and their databases)."""
        edge, internal = self.nginx("edge"), self.nginx("internal")
        bouncer = next((p for p in self.procs if p.tier == "pgbouncer"), None)
        if edge is not None:
            say(f"{edge.name} (pid {edge.pid}): {edge.stop(timeout=10, sig=signal.SIGQUIT)}")
        replicas = [p for p in self.procs if p.tier in TIERS]
        sent = [p for p in replicas if p.send(signal.SIGTERM)]
        for proc in replicas:
            if proc not in sent:
                say(f"{proc.name} (pid {proc.pid}): not running")
        for proc in sent:
            gone = proc.wait_gone(STOP_TIMEOUT)
            if not gone:
                proc.send(signal.SIGKILL)
                proc.wait_gone(5)
            say(f"{proc.name} (pid {proc.pid}): {'stopped' if gone else 'killed'}")
        if internal is not None:
            say(f"{internal.name} (pid {internal.pid}): {internal.stop(timeout=10, sig=signal.SIGQUIT)}")
        if bouncer is not None:  # SIGINT: pgbouncer's safe shutdown (waits for the transactions in flight)
            say(f"{bouncer.name} (pid {bouncer.pid}): {bouncer.stop(timeout=10, sig=signal.SIGINT)}")
        self.procs.clear()
        (self.state_dir / "fleet.json").unlink(missing_ok=True)

    def rows(self) -> list[dict]:
        out = []
        for proc in sorted(self.procs, key=lambda p: (TIERS.index(p.tier) if p.tier in TIERS else -1, p.slot)):
            alive = proc.alive()
            ready = "-"
            if alive and proc.tier in TIERS:
                status = _get(proc.probe(), timeout=1.0)
                ready = {200: "ready", 503: "not ready", None: "no answer"}.get(status, str(status))
            rss = _rss_mb(proc.pid) if alive else None
            out.append({"name": proc.name, "pid": proc.pid, "port": proc.port, "ops_port": proc.ops_port,
                        "state": "running" if alive else "gone", "ready": ready, "rss_mb": rss, "log": proc.log})
        return out


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.path.exists(p)), None)
    if not found:
        raise FleetError("nginx is not installed: `make tools` installs it (Debian's package)")
    return found


def _get(url: str, timeout: float = 0.5) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise FleetError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def storage_env(environ: dict[str, str]) -> dict[str, str]:
    """DATABASE_URL and REDIS_URL for the fleet: those given, else the local servers'; SQLite refused."""
    database = environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if not database.startswith("postgresql"):
        raise FleetError(f"make up needs PostgreSQL (replicas share the database); DATABASE_URL={database!r} is not. "
                         "`make run` is the one-process-per-service form on SQLite")
    return {"DATABASE_URL": database, "REDIS_URL": environ.get("REDIS_URL") or DEFAULT_REDIS_URL}


def plan(scale: dict[str, int], environ: dict[str, str], layout: Layout, state_dir: Path = STATE_DIR) -> Fleet:
    """The fleet `up` will start: storage, budgeted pools, the gateway trusting nginx's forwarded address."""
    env = storage_env(environ)
    max_connections, reserved = server_limits(env["DATABASE_URL"])
    with_db = sum(scale[s] for s in SERVICES)
    wanted = int(environ.get("DB_POOL_SIZE") or DEFAULT_POOL)
    if environ.get("PGBOUNCER", "").lower() in ("1", "true", "yes"):
        budget = BouncerBudget.plan(max_connections, reserved, len(SERVICES), client_pool=wanted)
        server = env["DATABASE_URL"]
        env["BAGTRACK_FLEET_DATABASE_URL"] = server  # PostgreSQL itself; DATABASE_URL now names pgbouncer
        env["DATABASE_URL"] = make_url(server).set(host=HOST, port=layout.pgbouncer).render_as_string(
            hide_password=False)
        env["DB_PGBOUNCER"] = "true"
    else:
        budget = Budget.plan(max_connections, reserved, with_db, wanted=wanted)
    for service in SERVICES:
        env[f"{service.upper()}_DB_POOL_SIZE"] = str(budget.client_pool)
        env[f"{service.upper()}_DB_MAX_OVERFLOW"] = "0"
    if environ.get("BAGTRACK_FLEET_INTERNAL") == "direct":
        if any(scale[s] != 1 for s in SERVICES):
            raise FleetError("BAGTRACK_FLEET_INTERNAL=direct needs one replica per service (there is no balancer)")
        env["BAGTRACK_FLEET_INTERNAL"] = "direct"
    # nginx on loopback is the gateway's one trusted proxy: it overwrites X-Forwarded-For with the real peer.
    env.setdefault("GATEWAY_TRUSTED_PROXIES", HOST)
    return Fleet(layout=layout, scale=scale, env=env, budget={**asdict(budget), "text": budget.describe()},
                 state_dir=state_dir)


# --- command line ---------------------------------------------------------------------------------------------

def print_ps(fleet: Fleet) -> None:
    print(f"bagtrack fleet: {fleet.url()}  (state {fleet.state_dir / 'fleet.json'})")
    print(f"scale: {' '.join(f'{t}={fleet.scale[t]}' for t in TIERS)}")
    if fleet.budget:
        print(f"connections: {fleet.budget['text']}")
    print("internal: " + "  ".join(f"{s} {fleet.layout.internal_url(s)}" for s in SERVICES))
    print(f"{'process':<15}{'pid':>8}{'port':>7}{'ops':>7}  {'state':<8}{'ready':<11}{'rss MB':>7}  log")
    for row in fleet.rows():
        print(f"{row['name']:<15}{row['pid']:>8}{row['port']:>7}{row['ops_port'] or '':>7}  {row['state']:<8}"
              f"{row['ready']:<11}{row['rss_mb'] if row['rss_mb'] is not None else '':>7}  {row['log']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the scaled system")
    up.add_argument("--scale", default=os.environ.get("SCALE", ""), help='e.g. "scanning=3 billing=2"')
    up.add_argument("--port", type=int, default=int(os.environ.get("BAGTRACK_PORT", "8080")), help="the edge port")
    up.add_argument("--base", type=int, default=int(os.environ.get("BAGTRACK_FLEET_PORT_BASE", "8100")),
                    help="first of the 70 loopback ports the processes use (default 8100)")
    sub.add_parser("ps", help="what runs where")
    sub.add_parser("down", help="stop exactly the recorded processes")
    restart = sub.add_parser("restart", help="replace one tier's replicas one at a time")
    restart.add_argument("service", choices=TIERS)
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("BAGTRACK_FLEET_DIR", STATE_DIR)))
    args = parser.parse_args(argv)
    try:
        fleet = Fleet.load(args.state_dir)
        if args.command == "up":
            if fleet is not None and any(p.alive() for p in fleet.procs):
                raise FleetError(f"already up (make ps shows it); make down first")
            fleet = plan(parse_scale(args.scale), dict(os.environ), Layout(edge=args.port, base=args.base),
                         args.state_dir)
            print(f"bagtrack fleet: migrating, then starting {' '.join(f'{t}={fleet.scale[t]}' for t in TIERS)}")
            print(f"connections: {fleet.budget['text']}", flush=True)
            try:
                fleet.up()
            except (FleetError, KeyboardInterrupt) as exc:
                print(f"make up failed: {exc}\nstopping what started:", file=sys.stderr)
                fleet.down(say=lambda line: print("  " + line, file=sys.stderr))
                return 1
            print_ps(fleet)
            print(f"\nthe API: {fleet.url()}/api/v1  (make ps, make restart SERVICE=<tier>, make down)")
            return 0
        if fleet is None:
            print("nothing is up (no var/up/fleet.json): make up" if args.command != "down" else "nothing to stop")
            return 0 if args.command == "down" else 1
        if args.command == "ps":
            print_ps(fleet)
        elif args.command == "down":
            fleet.down()
        elif args.command == "restart":
            fleet.restart(args.service)
        return 0
    except FleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
