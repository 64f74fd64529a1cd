"""The shift mix against a running bagtrack, through its gateway: `make loadtest USERS=500 DURATION=60`.

    python -m bench.loadtest --users 500 --duration 60 [--url http://127.0.0.1:8080] [--ramp 15] [--think 1.0]
                             [--dispatchers 0.6] [--billers 0.1] [--viewers 0.1] [--dashboard-every 10]

The mix: 60% dispatchers (scan parents and children), 10% billers (load the parents dispatchers of this run
finished onto bills of ~20, read them, complete them), 10% viewers (a dashboard open, reloaded every ~10 s, a
lookup now and then), the rest look bags up (bench/loadtest/workload.py).

Needs an admin (BAGTRACK_ADMIN_USERNAME / BAGTRACK_ADMIN_PASSWORD) to create the run's accounts; they are
removed at the end, also on Ctrl-C. Loopback only; the run stops by itself after ramp + duration.
Prints latency and statuses per route, CPU per process, and a last line
`users=… rps=… success=…% p95=…ms p99=…ms failures=…`.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import random
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bench.loadtest.accounts import Accounts, SetupFailed
from bench.loadtest.report import CpuMeter, Stats, listening_pids, render
from bench.loadtest.wire import Wire
from bench.loadtest.workload import Biller, Dispatcher, Lookup, Shared, Viewer
from shared.settings import DEFAULT_AREAS
from shared.topology import local_ports

CLIENT_TIMEOUT = 10.0  # an answer later than this is a failure


def loopback_only(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise SystemExit(f"loadtest: cannot resolve {host!r}: {exc}") from exc
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"loadtest: refusing {url}: load runs only against loopback addresses")


def system_pids(url: str) -> dict[str, int]:
    """The system's processes by name: a `make up` fleet's recorded replicas and nginx (its workers too), named
    "<tier>:<pid>" so each tier's replicas are summed; else the `make run` processes found by their ports."""
    from scripts.fleet import STATE_DIR, Fleet, children

    fleet = Fleet.load(Path(os.environ.get("BAGTRACK_FLEET_DIR", STATE_DIR)))
    if fleet is not None and fleet.layout.edge == (urlsplit(url).port or 80) and any(p.alive() for p in fleet.procs):
        pids = {f"{p.tier}:{p.pid}": p.pid for p in fleet.procs if p.alive()}
        for nginx in (p for p in fleet.procs if p.tier == "nginx" and p.alive()):
            pids.update({f"nginx:{pid}": pid for pid in children(nginx.pid)})
        return pids
    return listening_pids(process_ports(url))


def process_ports(url: str) -> dict[str, int]:
    """Where the system's processes listen: the gateway at the URL, the services from the stack's port base."""
    return local_ports(int(os.environ.get("BAGTRACK_SERVICES_PORT_BASE", "8000")), urlsplit(url).port or 80)


async def run(args: argparse.Namespace) -> str:
    api = args.url.rstrip("/") + "/api/v1"
    admin = (os.environ.get("BAGTRACK_ADMIN_USERNAME"), os.environ.get("BAGTRACK_ADMIN_PASSWORD"))
    if not all(admin):
        raise SetupFailed("set BAGTRACK_ADMIN_USERNAME and BAGTRACK_ADMIN_PASSWORD (an admin creates the accounts)")
    areas = [a.strip().lower() for a in os.environ.get("DISPATCH_AREAS", DEFAULT_AREAS).split(",") if a.strip()]
    cap = int(os.environ.get("AUTH_MAX_DISPATCHERS_PER_AREA", "10"))
    rng = random.Random(args.seed)
    run_id = uuid.uuid4().hex[:4].upper()
    # aiohttp for set-up, clean-up and token refreshes (not measured); the users themselves speak bench.loadtest.wire.
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20), timeout=timeout,
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        accounts = Accounts(http, api, admin, run_id)
        try:
            await accounts.start()
            n_dispatch, n_bill, _, n_look = mix(args)
            dispatchers, lookups, billers = await accounts.provision(
                dispatcher_users=n_dispatch, lookup_users=n_look, biller_users=n_bill, areas=areas, cap_per_area=cap)
            print(f"loadtest {run_id}: {args.users} users ({n_dispatch} scanning on {len(dispatchers)} dispatcher "
                  f"accounts, {n_look} looking up on {len(lookups)} biller accounts, {n_bill} billing on "
                  f"{len(billers)} biller accounts); ramp {args.ramp:.0f} s, measured {args.duration:.0f} s", flush=True)
            return await measure(args, api, accounts, dispatchers, lookups, billers, rng)
        finally:
            removed = await asyncio.shield(accounts.remove_all())
            print(f"loadtest {run_id}: removed {removed} accounts", flush=True)


def mix(args: argparse.Namespace) -> tuple[int, int, int, int]:
    """(dispatchers, billers, viewers, lookups) among the users: the shares asked for, lookups taking the rest."""
    n_dispatch = round(args.users * args.dispatchers)
    n_bill = min(args.users - n_dispatch, round(args.users * args.billers))
    n_view = min(args.users - n_dispatch - n_bill, round(args.users * getattr(args, "viewers", 0.0)))
    return n_dispatch, n_bill, n_view, args.users - n_dispatch - n_bill - n_view


def user_kinds(args: argparse.Namespace, dispatchers, lookups, billers) -> list[tuple[type, list, float]]:
    """The kind of each user, in index order, with the accounts it draws from and its mean think time. Viewers
    alternate between dispatcher accounts (one area's dashboard) and lookup accounts (billers: every area, bills)."""
    n_dispatch, n_bill, n_view, _ = mix(args)
    think, every = args.think, getattr(args, "dashboard_every", 10.0)
    kinds = []
    for i in range(args.users):
        if i < n_dispatch:
            kinds.append((Dispatcher, dispatchers, think))
        elif i < n_dispatch + n_bill:
            kinds.append((Biller, billers, think))
        elif i < n_dispatch + n_bill + n_view:
            kinds.append((Viewer, dispatchers if i % 2 and dispatchers else lookups, every))
        else:
            kinds.append((Lookup, lookups, think))
    return kinds


async def measure(args, api, accounts, dispatchers, lookups, billers, rng) -> str:
    stats, shared = Stats(), Shared(logins=accounts.logins)
    cpu = CpuMeter(system_pids(args.url))
    start = time.monotonic()
    stop_at = start + args.ramp + args.duration
    users = []
    for i, (kind, pool, think) in enumerate(user_kinds(args, dispatchers, lookups, billers)):
        users.append(kind(i, pool[i % len(pool)], wire=Wire(api, CLIENT_TIMEOUT), accounts=accounts, stats=stats,
                          shared=shared, think=think, stop_at=stop_at, rng=random.Random(rng.random())))
    rng.shuffle(users)

    async def staggered(user, delay: float) -> None:
        await asyncio.sleep(delay)
        await user.run()

    tasks = [asyncio.create_task(staggered(u, args.ramp * i / len(users))) for i, u in enumerate(users)]
    await asyncio.sleep(args.ramp)
    stats.begin()
    cpu.start()
    await asyncio.sleep(args.duration)
    stats.end()
    cpu.stop()
    # Users finish the request in flight (bounded by the client timeout), then stop by themselves.
    await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT + 5)
    for task in tasks:
        task.cancel()
    for user in users:
        user.wire.close()
    body, verdict = render(stats, cpu, users=args.users).rsplit("\n", 1)
    return (f"{body}\nresent once on a new connection (the server had closed the kept-alive one, nothing read): "
            f"{Wire.resent}\n{verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("BAGTRACK_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (after the ramp)")
    parser.add_argument("--ramp", type=float, default=None, help="seconds over which users start (default: 15)")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time between a user's actions, s")
    parser.add_argument("--dispatchers", type=float, default=0.6, help="share of users scanning")
    parser.add_argument("--billers", type=float, default=0.1,
                        help="share of users loading bills (of what the dispatchers leave); the rest look up")
    parser.add_argument("--viewers", type=float, default=0.1,
                        help="share of users keeping a dashboard open (of what dispatchers and billers leave)")
    parser.add_argument("--dashboard-every", type=float, default=10.0, help="mean seconds between dashboard refreshes")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if (args.users < 1 or args.duration <= 0 or args.dashboard_every <= 0
            or not all(0 <= share <= 1 for share in (args.dispatchers, args.billers, args.viewers))):
        parser.error("users ≥ 1, duration > 0, dashboard-every > 0, and each share within 0..1")
    args.ramp = 15.0 if args.ramp is None else args.ramp
    loopback_only(args.url)
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    task = loop.create_task(run(args))
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        print(loop.run_until_complete(task))
        return 0
    except asyncio.CancelledError:
        print("loadtest: interrupted", file=sys.stderr)
        return 130
    except (SetupFailed, aiohttp.ClientError, OSError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
