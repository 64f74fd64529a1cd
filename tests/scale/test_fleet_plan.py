"""scripts/fleet.py without running a fleet: the scale, the connection budget, the rendered nginx configurations,
the identity of a recorded process, the storage it refuses."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from scripts.fleet import (DEFAULT_SCALE, MAX_REPLICAS, TIERS, Budget, Fleet, FleetError, Layout, Proc, parse_scale,
                           start_ticks, storage_env)
from shared.topology import SERVICES
from tests.scale.conftest import require_nginx


def test_scale_names_tiers_over_the_default():
    assert parse_scale("") == DEFAULT_SCALE
    assert parse_scale("scanning=3 billing=2") == {**DEFAULT_SCALE, "scanning": 3, "billing": 2}
    assert parse_scale("scanning=3,gateway=1")["gateway"] == 1
    for bad in ("scaning=3", "scanning", "scanning=x", "scanning=0", f"scanning={MAX_REPLICAS + 1}", "nginx=2"):
        with pytest.raises(FleetError):
            parse_scale(bad)


def test_the_budget_fits_max_connections_with_a_restart_counted():
    default = Budget.plan(100, 3, replicas=5)
    assert default.pool == 10 and default.used == 66 and default.used <= 100 - 3 - default.headroom
    crowded = Budget.plan(100, 3, replicas=9)  # (100 - 3 - 20) // 10 = 7 per process: pool 6
    assert crowded.pool == 6 and crowded.used <= 100 - 3 - crowded.headroom
    assert Budget.plan(100, 3, replicas=5, wanted=4).pool == 4
    with pytest.raises(FleetError, match="pgbouncer"):
        Budget.plan(100, 3, replicas=30)
    big = Budget.plan(500, 3, replicas=20)
    assert big.headroom == 100 and big.pool == 10


def test_make_up_refuses_sqlite_and_defaults_to_the_local_servers():
    with pytest.raises(FleetError, match="PostgreSQL"):
        storage_env({"DATABASE_URL": "sqlite:///var/x.db"})
    env = storage_env({})
    assert env["DATABASE_URL"].startswith("postgresql://") and env["REDIS_URL"].startswith("redis://")


def fake_fleet(tmp_path, scale: dict[str, int]) -> Fleet:
    fleet = Fleet(layout=Layout(edge=18080, base=18100), scale=scale, env={}, state_dir=tmp_path)
    for tier in TIERS:
        for slot in range(scale[tier]):
            fleet.procs.append(Proc(tier, slot, fleet.layout.slot(tier, slot), pid=1, ticks=0, cmd=[], log="",
                                    ops_port=fleet.layout.ops(slot) if tier == "gateway" else None))
    return fleet


def test_the_edge_renders_the_gateways_and_the_internal_nginx_every_service(tmp_path):
    fleet = fake_fleet(tmp_path, {**DEFAULT_SCALE, "scanning": 3})
    edge, internal = fleet.render("edge"), fleet.render("internal")
    assert re.findall(r"upstream (\w+) \{", edge) == ["gateway"]
    assert re.findall(r"upstream (\w+) \{", internal) == list(SERVICES)
    assert edge.count("server 127.0.0.1:18150 ") == 1 and edge.count("server 127.0.0.1:18151 ") == 1
    assert internal.count("server 127.0.0.1:1812") == 3  # scanning-0..2
    assert "listen 127.0.0.1:18080" in edge and "listen 127.0.0.1:18080" not in internal
    for service in SERVICES:
        assert f"listen 127.0.0.1:{fleet.layout.internal(service)} " in internal
        assert f"listen 127.0.0.1:{fleet.layout.internal(service)} " not in edge
    assert "@" not in re.sub(r"#.*", "", edge + internal), "a marker left unfilled"
    # A restart's old replica leaves the upstream, the others stay.
    leaving = fleet.replicas("scanning")[1]
    without = fleet.render("internal", leaving=leaving)
    assert f"127.0.0.1:{leaving.port} " not in without and without.count("server 127.0.0.1:1812") == 2


def test_nginx_accepts_both_rendered_configurations(tmp_path):
    require_nginx()
    fleet = fake_fleet(tmp_path, DEFAULT_SCALE)
    for kind in ("edge", "internal"):
        conf = fleet.write_nginx_conf(kind)  # runs `nginx -t` and raises FleetError on refusal
        assert conf.exists()


def test_a_recorded_pid_is_signalled_only_while_it_is_the_same_process(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        ticks = start_ticks(sleeper.pid)
        assert ticks is not None
        same = Proc("scanning", 0, 1, pid=sleeper.pid, ticks=ticks, cmd=[], log="")
        other = Proc("scanning", 0, 1, pid=sleeper.pid, ticks=ticks + 1, cmd=[], log="")  # a reused pid
        assert same.alive() and not other.alive()
        assert other.stop(timeout=1) == "not running" and sleeper.poll() is None
        assert same.stop(timeout=5) == "stopped"
        assert sleeper.wait(5) is not None and not same.alive()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert start_ticks(os.getpid()) is not None
