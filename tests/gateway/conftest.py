"""Real processes on loopback for the gateway tests: a fake upstream (a uvicorn subprocess) and the gateway (its own
entry point, `python -m gateway`, with a public and an ops port)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.support import free_port
from tests.tokens import AUDIENCE, ISSUER, SigningKey

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    ops_url: str = ""  # the gateway's ops port: /ready and /metrics

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def uvicorn_command(target: str, port: int) -> list[str]:
    return ["-m", "uvicorn", "--factory", target, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--no-proxy-headers", "--timeout-graceful-shutdown", "1"]


def gateway_command(port: int, ops_port: int) -> list[str]:
    return ["-m", "gateway", "--host", "127.0.0.1", "--port", str(port), "--ops-host", "127.0.0.1",
            "--ops-port", str(ops_port)]


@contextmanager
def running(command: list[str], port: int, env: dict[str, str], log_path: Path, probe: str = "/health",
            ops_port: int | None = None) -> Iterator[Server]:
    """Run `python <command>` (listening on `port`) until the block ends; fail with its log if it never answers."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path,
                    f"http://127.0.0.1:{ops_port}" if ops_port else "")
    try:
        _wait_until_answering(server, probe)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(server: Server, probe: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.log_path.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + probe, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{server.log_path.name} did not answer {probe} within {timeout}s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return SigningKey.generate("test-key-1")


@pytest.fixture(scope="session")
def fake_upstream(signing_key, tmp_path_factory) -> Iterator[Server]:
    env = {"FAKE_JWKS": json.dumps({"keys": [signing_key.jwk()]})}
    log_path = tmp_path_factory.mktemp("logs") / "fake_upstream.log"
    port = free_port()
    with running(uvicorn_command("tests.gateway.fake_upstream:create_app", port), port, env, log_path,
                 probe="/ready") as server:
        yield server


@pytest.fixture(scope="session")
def dead_url() -> str:
    """An address where nothing listens: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def start_gateway(fake_upstream, dead_url, tmp_path_factory):
    """Start a gateway whose upstreams are the fake, except billing (nothing listening); env overrides apply."""
    with ExitStack() as stack:
        def start(**overrides: str) -> Server:
            env = {"AUTH_URL": fake_upstream.url, "SCANNING_URL": fake_upstream.url,
                   "DASHBOARD_URL": fake_upstream.url, "BILLING_URL": dead_url,
                   "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": AUDIENCE, "UPSTREAM_TIMEOUT": "1",
                   "GATEWAY_MAX_BODY_BYTES": "4096", "GATEWAY_READY_TIMEOUT": "0.5",
                   "GATEWAY_BREAKER_MIN_CALLS": "5",
                   "LOG_LEVEL": "WARNING", "ACCESS_LOG": "false", **overrides}
            log_path = tmp_path_factory.mktemp("logs") / "gateway.log"
            port, ops_port = free_port(), free_port()
            return stack.enter_context(running(gateway_command(port, ops_port), port, env, log_path,
                                               ops_port=ops_port))

        yield start


@pytest.fixture(scope="session")
def gateway(start_gateway) -> Server:
    return start_gateway()


@pytest.fixture(scope="session")
def client(gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def ops(gateway) -> Iterator[httpx.Client]:
    """The gateway's ops port, where /ready and /metrics are answered."""
    with httpx.Client(base_url=gateway.ops_url, timeout=10) as http:
        yield http


@pytest.fixture
def auth(signing_key) -> dict[str, str]:
    """Authorization header with a valid access token."""
    return {"Authorization": f"Bearer {signing_key.mint()}"}
