"""`make loadtest` for a few seconds against the real system: accounts come and go, the last line says how it went."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest

from scripts.stack import ROOT
from tests.e2e.conftest import ADMIN, bearer, login

pytestmark = pytest.mark.e2e
LAST_LINE = re.compile(r"^users=(\d+) rps=([\d.]+) success=([\d.]+)% p95=([\d.]+)ms p99=([\d.]+)ms failures=(\d+)$")


def test_a_short_run_measures_the_shift_mix_and_removes_its_accounts(stack):
    env = {**os.environ, "BAGTRACK_ADMIN_USERNAME": ADMIN[0], "BAGTRACK_ADMIN_PASSWORD": ADMIN[1]}
    run = subprocess.run([sys.executable, "-m", "bench.loadtest", "--url", stack.url(), "--users", "12",
                          "--duration", "4", "--ramp", "1", "--seed", "7"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    last = LAST_LINE.match(lines[-1])
    assert last, lines[-1]
    users, rps, success, _p95, _p99, failures = last.groups()
    assert users == "12" and float(rps) > 0 and failures == "0" and float(success) == 100.0
    assert any(line.startswith("POST /scans/child") for line in lines)
    assert any("removed" in line for line in lines)

    with httpx.Client(base_url=stack.url() + "/api/v1", timeout=10) as gw:
        admin = bearer(login(gw, *ADMIN).json()["access_token"])
        users = gw.get("/users", params={"limit": 200}, headers=admin).json()["items"]
    assert not [u["username"] for u in users if u["username"].startswith("lt")]
