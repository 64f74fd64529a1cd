"""The whole system as local processes on loopback: migrations, then four services and the gateway.

Used by `make run`, the end-to-end tests and the benchmarks, so all three run the same topology.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.topology import SERVICES, local_ports

ROOT = Path(__file__).resolve().parent.parent
PORT_NAMES = (*SERVICES, "gateway", "gateway_ops")  # a port each; gateway_ops is the gateway's /ready and /metrics


@dataclass
class Stack:
    """Processes of one running system. `ports` maps auth/scanning/billing/dashboard/gateway/gateway_ops (see
    PORT_NAMES) to ports."""

    ports: dict[str, int]
    env: dict[str, str] = field(default_factory=dict)
    log_dir: Path = ROOT / "var" / "log"
    host: str = "127.0.0.1"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def url(self, name: str = "gateway") -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONPATH", str(ROOT))
        # Huge pages for malloc's own mappings: auth maps each argon2 buffer per hash (services/auth/passwords.py),
        # and faulting it in with 2 MiB pages instead of 4 KiB ones makes a hash 25 ms instead of 38 (host THP
        # "madvise" or "always"; no effect with "never"). Same setting in deploy/Dockerfile.
        env.setdefault("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
        for name in SERVICES:
            env[f"{name.upper()}_URL"] = self.url(name)
        return env

    def migrate(self) -> None:
        """Bring every service's database to its latest migration; Alembic's chatter is shown only on failure."""
        run = subprocess.run([sys.executable, "-m", "shared.migrate", *SERVICES], cwd=ROOT, env=self.process_env(),
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{run.stdout}{run.stderr}")

    def ops_url(self) -> str:
        """The gateway's ops port: its /ready and /metrics (the public port answers them 404)."""
        return self.url("gateway_ops")

    def probe_url(self, name: str) -> str:
        """Where a process answers /ready and /metrics: a service on its one port, the gateway on its ops port."""
        return self.ops_url() if name == "gateway" else self.url(name)

    def start(self, names: tuple[str, ...] = (*SERVICES, "gateway")) -> None:
        """Start `names` (default: every service, then the gateway): a uvicorn process per service, and the gateway
        through its own entry point (`python -m gateway`, public port plus ops port)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.process_env()
        for name in names:
            if name == "gateway":
                cmd = gateway_command(self.host, self.ports["gateway"], self.ports["gateway_ops"])
            else:
                cmd = service_command(name, self.host, self.ports[name])
            log = open(self.log_dir / f"{name}.log", "ab")
            self.procs[name] = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=env, stdout=log,
                                                stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every process answers /ready, or raise naming the one that did not."""
        deadline = time.monotonic() + timeout
        pending = dict(self.procs)
        while pending:
            for name, proc in list(pending.items()):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.last_error(name)}\n"
                                       f"(full log: {self.log_dir / (name + '.log')})")
                try:
                    if httpx.get(self.probe_url(name) + "/ready", timeout=1).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout}s: {', '.join(pending)}; see {self.log_dir}")
            time.sleep(0.1)

    def last_error(self, name: str) -> str:
        """The last error a process logged (JSON lines), so a failed start says why without opening the log."""
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") == "error" and "startup failed" not in entry.get("msg", ""):
                raised = [l for l in entry["msg"].splitlines() if re.match(r"^[\w.]+(Error|Exception): ", l)]
                return raised[-1] if raised else entry["msg"].strip().splitlines()[-1]
        return lines[-1] if lines else "no log"

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def service_command(name: str, host: str, port: int) -> list[str]:
    """A service process's arguments to the interpreter (shared/serve.py: uvicorn that drains on SIGTERM)."""
    return ["-m", "shared.serve", f"services.{name}.app:create_app", "--host", host, "--port", str(port)]


def gateway_command(host: str, port: int, ops_port: int) -> list[str]:
    """The gateway's: its public port and its ops port (/ready, /metrics)."""
    return ["-m", "gateway", "--host", host, "--port", str(port), "--ops-host", host, "--ops-port", str(ops_port)]


def default_ports() -> dict[str, int]:
    """The local stack's ports: BAGTRACK_PORT for the gateway, its ops port BAGTRACK_OPS_PORT (default the next
    one), the services from BAGTRACK_SERVICES_PORT_BASE."""
    ports = local_ports(int(os.environ.get("BAGTRACK_SERVICES_PORT_BASE", "8000")),
                        int(os.environ.get("BAGTRACK_PORT", "8080")))
    ports["gateway_ops"] = int(os.environ.get("BAGTRACK_OPS_PORT", ports["gateway"] + 1))
    return ports
