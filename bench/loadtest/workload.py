"""What the virtual users do: dispatchers scan a parent, then new children into it; lookup users (billers) look
recently scanned bags up, page lists, ask who they are, and now and then log in again; billers load the parents
dispatchers of this run finished onto bills (SPEC: "billers add parents to bills"), read their bill now and then,
complete it when full and start the next; viewers keep a dashboard open and reload it every ~10 s (SPEC: "dashboards
refresh every 10 s"), now and then looking a bag up through it.

Each user waits an exponentially distributed think time (mean `think` s) between actions, like a person with a
scanner; latency is measured from the moment each request is sent.
"""
from __future__ import annotations

import asyncio
import json as jsonlib
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from bench.loadtest.accounts import PASSWORD, Account, Accounts
from bench.loadtest.report import Stats
from bench.loadtest.wire import Wire

PARENT_FORMATS = (("SB", 30), ("SB", 30), ("M444-", 15))  # 2 of 3 parents are SB, as in the seeded data


@dataclass
class Shared:
    """What users learn from each other: parents scanned during the run (the lookups' targets)."""

    recent_parents: deque = field(default_factory=lambda: deque(maxlen=5000))
    recent_children: deque = field(default_factory=lambda: deque(maxlen=5000))
    # Parents this run created and a dispatcher has finished with (moved on from): what billers load, each once.
    finished_parents: deque = field(default_factory=lambda: deque(maxlen=5000))
    logins: deque = field(default_factory=deque)  # when this run logged in (set-up included), for the window below
    logins_per_minute: int = 90  # of auth's 100 a minute per client address, which every user here shares


    def take_login(self) -> bool:
        """Allow one more login if this run's logins in the last minute leave room for it."""
        now = time.monotonic()
        while self.logins and self.logins[0] < now - 60:
            self.logins.popleft()
        if len(self.logins) >= self.logins_per_minute:
            return False
        self.logins.append(now)
        return True


class User:
    """One virtual user: a loop of think, act, record — until `stop_at`."""

    def __init__(self, index: int, account: Account, *, wire: Wire, accounts: Accounts, stats: Stats,
                 shared: Shared, think: float, stop_at: float, rng: random.Random) -> None:
        self.index, self.account, self.wire = index, account, wire
        self.accounts, self.stats, self.shared, self.think = accounts, stats, shared, think
        self.stop_at, self.rng = stop_at, rng

    async def call(self, label: str, method: str, path: str, *, json: dict | None = None,
                   params: dict | None = None, auth: bool = True, parse: bool = False) -> tuple[int, dict | None]:
        """Send one request, record its latency and status under `label`; status 0 means no answer.
        The body is read whole (as a client would) but decoded only when `parse` asks for it."""
        if auth:
            await self.accounts.ensure_fresh(self.account)
        sent = time.perf_counter()
        status, body = 0, None
        try:
            status, raw = await self.wire.request(method, path, body=json, params=params,
                                                  headers=self.account.headers if auth else None)
            if parse and 200 <= status < 300:
                body = jsonlib.loads(raw)
            outcome = str(status)
        except TimeoutError:
            outcome = "timeout"
        except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
            outcome = type(exc).__name__
        self.stats.record(label, outcome, time.perf_counter() - sent)
        return status, body

    async def pause(self) -> bool:
        """Think; False once the run is over."""
        await asyncio.sleep(self.rng.expovariate(1 / self.think))
        return time.monotonic() < self.stop_at

    async def run(self) -> None:
        raise NotImplementedError


class Dispatcher(User):
    """Scans a parent picked at random from the whole code space (new, own area's or another's), then new
    children into it until it is full or the person moves on."""

    async def run(self) -> None:
        counter = 0
        while await self.pause():
            prefix, capacity = self.rng.choice(PARENT_FORMATS)
            parent = f"{prefix}{self.rng.randrange(100_000):05d}"
            status, body = await self.call("POST /scans/parent", "POST", "/scans/parent", parse=True,
                                           json={"qr_id": parent, "scan_id": uuid.uuid4().hex})
            if status != 200 or body is None:
                continue
            self.shared.recent_parents.append(parent)
            room = body["parent"]["capacity"] - body["parent"]["child_count"]
            for _ in range(self.rng.randint(1, max(1, room)) if room else 1):
                if not await self.pause():
                    return
                counter += 1
                child = f"L{self.accounts.run_id}-{self.index:03d}{counter:05d}"
                status, _ = await self.call("POST /scans/child", "POST", "/scans/child",
                                            json={"parent_qr": parent, "child_qr": child,
                                                  "scan_id": uuid.uuid4().hex})
                if status == 200:
                    self.shared.recent_children.append(child)
                else:
                    break  # full (409) or refused: on to the next parent
            if body.get("created"):  # a parent of this run (not a seeded one, likely billed already): billable now
                self.shared.finished_parents.append(parent)


class Lookup(User):
    """Looks up bags scanned during the run; sometimes pages a list, asks /auth/me, or logs in again."""

    async def run(self) -> None:
        while await self.pause():
            roll = self.rng.random()
            if roll < 0.80:
                pool = self.shared.recent_parents if self.rng.random() < 0.7 else self.shared.recent_children
                qr = self.rng.choice(pool) if pool else f"SB{self.rng.randrange(100_000):05d}"
                await self.call("GET /bags/{qr}", "GET", f"/bags/{qr}")
            elif roll < 0.88:
                await self.call("GET /bags", "GET", "/bags", params={"limit": "20", "type": "parent"})
            elif roll < 0.95:
                await self.call("GET /scans", "GET", "/scans", params={"limit": "20"})
            elif roll < 0.99 or not self.shared.take_login():
                await self.call("GET /auth/me", "GET", "/auth/me")
            else:
                status, body = await self.call("POST /auth/login", "POST", "/auth/login", auth=False, parse=True,
                                               json={"username": self.account.username, "password": PASSWORD})
                if status == 200 and body:
                    self.account.take(body)



class Biller(User):
    """Creates a bill (capacity ~20), loads parents dispatchers of this run finished onto it, reads it now and
    then, completes it when full and starts the next. With no finished parent to load, it reads its bill."""

    async def run(self) -> None:
        bill: str | None = None
        linked = capacity = 0
        while await self.pause():
            if bill is None:
                capacity = self.rng.randint(15, 25)
                status, body = await self.call("POST /bills", "POST", "/bills", parse=True, json={
                    "capacity": capacity, "destination": "Loadtest",
                    "description": f"loadtest {self.accounts.run_id} user {self.index}"})
                if status == 201 and body:
                    bill, linked = body["bill_id"], 0
                continue
            if linked >= capacity:
                status, _ = await self.call("POST /bills/{id}/complete", "POST", f"/bills/{bill}/complete")
                if status in (200, 409):  # completed (or already): the next bill
                    bill = None
                continue
            if self.shared.finished_parents and self.rng.random() < 0.8:
                parent = self.shared.finished_parents.popleft()
                status, body = await self.call("POST /bills/{id}/bags", "POST", f"/bills/{bill}/bags", parse=True,
                                               json={"parent_qr": parent})
                if status == 201 and body:
                    linked = body["linked_count"]
                continue
            status, body = await self.call("GET /bills/{id}", "GET", f"/bills/{bill}", parse=True)
            if status == 200 and body:
                linked = body["linked_count"]


class Viewer(User):
    """Keeps the dashboard open: each refresh (every `think` s, 10 by default) loads stats and recent activity as the
    page does, every third one the trend chart too, and every other one looks a recently scanned parent up through
    the dashboard's composed lookup. Half the viewers are dispatchers (their area's view), half billers."""

    async def run(self) -> None:
        refreshes = 0
        while await self.pause():
            refreshes += 1
            await self.call("GET /dashboard/stats", "GET", "/dashboard/stats")
            await self.call("GET /dashboard/activity", "GET", "/dashboard/activity")
            if refreshes % 3 == 1:
                await self.call("GET /dashboard/trends", "GET", "/dashboard/trends", params={"days": "14"})
            if refreshes % 2 == 0 and self.shared.recent_parents:
                qr = self.rng.choice(self.shared.recent_parents)
                await self.call("GET /dashboard/lookup/{code}", "GET", f"/dashboard/lookup/{qr}")
