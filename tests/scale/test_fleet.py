"""`make up` for real: replicas behind the edge and internal nginx, requests spread over them, a replica killed
under load, rolling restarts under load, a stream told to reconnect, and `down` leaving nothing behind.

The loads are `make loadtest` itself (the shift mix, its accounts, its report) for a few seconds: its last line
counts every request that did not get an answer the system meant (timeouts and 5xx included). Like a browser, its
client sends a request once more when the server had closed the kept-alive connection before reading it (a
reload closes idle connections); those are printed, never hidden in the failure count."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

from scripts.fleet import MAX_REPLICAS, children
from scripts.stack import ROOT
from tests.scale.conftest import ADMIN, LONG
from tests.sse import EventReader
from tests.support import metric_total

pytestmark = pytest.mark.e2e
LAST_LINE = re.compile(r"^users=(\d+) rps=([\d.]+) success=([\d.]+)% p95=([\d.]+)ms p99=([\d.]+)ms failures=(\d+)$")
PASSWORD = "Sh1ft!work"


class Load:
    """`python -m bench.loadtest` against the fleet's edge, in the background, its output read as it comes."""

    def __init__(self, fleet, users: int, duration: float) -> None:
        env = {**os.environ, "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1],
               "BAGTRACK_FLEET_DIR": str(fleet.state_dir)}
        self.ramp = 2.0
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.loadtest", "--url", fleet.url(), "--users",
                                      str(users), "--duration", str(duration), "--ramp", str(self.ramp)],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait_for_users(self, after: float = 1.5) -> None:
        """Until every user has started (its plan line comes once the accounts exist) and `after` more."""
        deadline = time.monotonic() + 60
        while not any(" users (" in line for line in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, "the load never started"
            time.sleep(0.1)
        time.sleep(self.ramp + after)

    def failures(self) -> tuple[int, str]:
        self.proc.wait(timeout=180)
        self._reader.join(10)
        out = "".join(self.lines)
        print(out)
        assert self.proc.returncode == 0, out
        last = LAST_LINE.match(out.strip().splitlines()[-1])
        assert last, out
        return int(last.group(6)), out


@contextmanager
def signed_in(fleet, username: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fleet.url() + "/api/v1", timeout=10) as client:
        response = client.post("/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


@contextmanager
def dispatcher(fleet, area: str = "jaipur") -> Iterator[httpx.Client]:
    name = f"fleet{os.urandom(4).hex()}"
    with signed_in(fleet, *ADMIN) as admin:
        made = admin.post("/users", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD,
                                          "role": "dispatcher", "dispatch_area": area})
        assert made.status_code == 201, made.text
    with signed_in(fleet, name, PASSWORD) as client:
        yield client


# --- the topology ------------------------------------------------------------------------------------------

def test_the_fleet_serves_the_api_through_the_edge_and_only_the_public_routes(fleet):
    with dispatcher(fleet) as gw:
        qr = f"SB{int.from_bytes(os.urandom(2), 'big') % 90000 + 10000:05d}"
        parent = gw.post("/scans/parent", json={"qr_id": qr, "scan_id": os.urandom(8).hex()})
        assert parent.status_code == 200, parent.text
        assert gw.get(f"/bags/{qr}").json()["qr_id"] == qr
    edge = fleet.url()
    assert httpx.get(edge + "/health").json() == {"status": "ok"}
    for hidden in ("/metrics", "/ready", "/internal/stats", "/api/v1/internal/stats", "/auth/jwks", "/index.html"):
        assert httpx.get(edge + hidden).status_code == 404, hidden
    page = httpx.get(edge + "/")  # the web app, through the edge like the API
    assert page.status_code == 200 and "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert httpx.get(edge + "/app/app.js").status_code == 200
    # The ops ports answer on loopback, never through the edge.
    for proc in fleet.procs:
        if proc.tier != "nginx":
            assert httpx.get(proc.probe(), timeout=5).status_code == 200, proc.name


def test_requests_spread_over_the_replicas(fleet):
    """Shown by each replica's own metrics: gateways count the public requests, scannings the forwarded ones."""
    route = "/bags/{qr_id}"
    scannings, gateways = fleet.replicas("scanning"), fleet.replicas("gateway")
    before = {p.name: metric_total(p.probe("/metrics"), "bagtrack_http_requests_total",
                                   route=route) for p in scannings}
    with dispatcher(fleet) as gw:
        qr = f"SB{int.from_bytes(os.urandom(2), 'big') % 90000 + 10000:05d}"
        gw.post("/scans/parent", json={"qr_id": qr, "scan_id": os.urandom(8).hex()})
        threads = [threading.Thread(target=lambda: [gw.get(f"/bags/{qr}") for _ in range(20)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    after = {p.name: metric_total(p.probe("/metrics"), "bagtrack_http_requests_total",
                                  route=route) for p in scannings}
    served = {name: after[name] - before[name] for name in after}
    print(f"\nGET {route} served per scanning replica: {served}")
    assert sum(served.values()) >= 80
    assert all(n >= 10 for n in served.values()), served
    for gateway in gateways:
        assert metric_total(gateway.probe("/metrics"), "bagtrack_http_requests_total",
                            route="/api/v1/bags/{qr_id}") > 0, gateway.name


# --- faults and deploys under load -----------------------------------------------------------------------------

# Every tier in the long run (make test-scale: each at 2 replicas); scanning, the busiest, in the smoke.
@pytest.mark.parametrize("tier", ["scanning"] + (["auth", "billing", "dashboard", "gateway"] if LONG else []))
def test_a_replica_killed_under_load_loses_no_request(fleet, tier):
    load = Load(fleet, users=60 if LONG else 30, duration=20 if LONG else 8)
    load.wait_for_users()
    victim = fleet.replicas(tier)[0]
    os.kill(victim.pid, signal.SIGKILL)
    failures, out = load.failures()
    assert failures == 0, out
    # The dead replica is replaced by a restart (which also replaces the live one).
    fleet.restart(tier, say=print)
    assert all(p.alive() for p in fleet.replicas(tier)) and victim not in fleet.procs


def test_keyed_writes_retried_across_a_killed_replica_land_once(fleet):
    """Four scanners send 24 child scans, each with its scan_id, and a scanning replica is SIGKILLed among them.
    A scan that got no answer, or a 5xx, is sent again with the same scan_id (what the key is for): every
    child lands on the parent exactly once, in the bag and in the scan log."""
    with dispatcher(fleet) as gw:
        parent = f"SB{int.from_bytes(os.urandom(2), 'big') % 90000 + 10000:05d}"
        assert gw.post("/scans/parent", json={"qr_id": parent, "scan_id": os.urandom(8).hex()}).status_code == 200
        children_qr = [f"{parent}-K{i}" for i in range(24)]
        resent: list[str] = []
        outcomes: dict[str, int] = {}

        def scan(child: str) -> None:
            key = os.urandom(8).hex()
            for _ in range(20):
                try:
                    response = gw.post("/scans/child", json={"parent_qr": parent, "child_qr": child, "scan_id": key})
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code < 500:
                    outcomes[child] = response.status_code
                    return
                resent.append(child)
                time.sleep(0.2)

        def scanner(mine: list[str]) -> None:
            for child in mine:
                scan(child)
                time.sleep(0.05)

        threads = [threading.Thread(target=scanner, args=(children_qr[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        victim = fleet.replicas("scanning")[0]
        os.kill(victim.pid, signal.SIGKILL)
        for thread in threads:
            thread.join(60)
        print(f"\nsent again after no answer or a 5xx: {len(resent)} ({sorted(set(resent))})")
        assert outcomes == {child: 200 for child in children_qr}, outcomes
        bag = gw.get(f"/bags/{parent}").json()
        assert bag["child_count"] == len(children_qr), bag
        log = gw.get("/scans", params={"qr": parent, "kind": "child", "limit": 100}).json()["items"]
        assert sorted(item["child_qr"] for item in log) == sorted(children_qr), log
    fleet.restart("scanning", say=print)


@pytest.mark.parametrize("tier", ["scanning", "gateway"] + (["auth", "billing", "dashboard"] if LONG else []))
def test_a_rolling_restart_under_load_loses_nothing(fleet, tier):
    old = {p.pid for p in fleet.replicas(tier)}
    load = Load(fleet, users=60 if LONG else 30, duration=20 if LONG else 8)
    load.wait_for_users()
    fleet.restart(tier, say=print)
    failures, out = load.failures()
    assert failures == 0, out
    new = fleet.replicas(tier)
    assert len(new) == fleet.scale[tier] and not old & {p.pid for p in new}
    assert all(p.alive() for p in new)
    assert all(p.slot < 2 * MAX_REPLICAS for p in new)


def test_a_restarting_dashboard_tells_its_streams_to_reconnect(fleet):
    with dispatcher(fleet) as gw:
        ticket = gw.post("/dashboard/stream/ticket").json()["ticket"]
        reader = EventReader(f"{fleet.url()}/api/v1/dashboard/stream?ticket={ticket}")
        try:
            snapshot = reader.next("stats", 10)
            restarting = threading.Thread(target=fleet.restart, args=("dashboard",), kwargs={"say": print})
            restarting.start()
            told = reader.next("reconnect", 30)
            assert "Last-Event-ID" in told["data"]["detail"]
            reader.next("closed", 10)
            restarting.join(60)
        finally:
            reader.close()
        # Reconnecting (a new ticket, Last-Event-ID) lands on the new replica and resumes.
        ticket = gw.post("/dashboard/stream/ticket").json()["ticket"]
        again = EventReader(f"{fleet.url()}/api/v1/dashboard/stream?ticket={ticket}",
                            {"Last-Event-ID": snapshot["id"]})
        try:
            assert again.status == 200
            again.next("stats", 10)
        finally:
            again.close()


def test_down_stops_exactly_what_it_recorded(fleet):
    recorded = [(p.name, p.pid) for p in fleet.procs]
    workers = [pid for p in fleet.procs if p.tier == "nginx" for pid in children(p.pid)]
    assert len(recorded) == sum(fleet.scale.values()) + 2 and workers
    lines: list[str] = []
    fleet.down(say=lines.append)
    time.sleep(0.5)
    alive = [f"{name} ({pid})" for name, pid in recorded if os.path.exists(f"/proc/{pid}")
             and open(f"/proc/{pid}/stat").read().split(") ", 1)[1][0] != "Z"]
    alive += [f"nginx worker {pid}" for pid in workers if os.path.exists(f"/proc/{pid}")
              and open(f"/proc/{pid}/stat").read().split(") ", 1)[1][0] != "Z"]
    assert not alive, alive
    assert len(lines) == len(recorded) and all(line.endswith("stopped") for line in lines), lines
    assert not (fleet.state_dir / "fleet.json").exists()
