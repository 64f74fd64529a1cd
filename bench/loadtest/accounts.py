"""The run's accounts: created through the admin API within the product's own limits, logged in before the
measured window, refreshed before their access token expires, and removed afterwards."""
from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp

PASSWORD = "L0ad!" + secrets.token_urlsafe(9)
# A virtual user acts about once a second; an account shared by a handful of them is still a plausible person's
# load for the per-user limits, and the accounts stay within the per-area dispatcher cap and the login limits.
USERS_PER_DISPATCHER_ACCOUNT = 5
USERS_PER_LOOKUP_ACCOUNT = 10
USERS_PER_BILLER_ACCOUNT = 5  # billers' accounts are their own (role biller), apart from the lookups' ones
MAX_LOOKUP_ACCOUNTS = 40


class SetupFailed(Exception):
    """The run cannot start (no admin, no room for dispatchers, the system refused an account)."""


@dataclass
class Account:
    username: str
    role: str
    area: str | None
    user_id: int | None = None
    access_token: str = ""
    refresh_token: str = ""
    expires_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def take(self, tokens: dict) -> None:
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        self.expires_at = time.monotonic() + tokens["expires_in"]


class Accounts:
    """Everything the run creates in the system, so that it can all be removed again."""

    def __init__(self, http: aiohttp.ClientSession, api: str, admin: tuple[str, str], run_id: str) -> None:
        self.http, self.api, self.admin_credentials, self.run_id = http, api, admin, run_id
        self.admin: Account | None = None
        self.created: list[Account] = []
        self.logins: deque[float] = deque()  # when each login was sent: they all count against one address's limit

    async def login(self, account: Account, password: str) -> None:
        """Log in, waiting out a 429 (set-up is not measured, and the limits are the product's own)."""
        for _ in range(20):
            self.logins.append(time.monotonic())
            async with self.http.post(f"{self.api}/auth/login",
                                      json={"username": account.username, "password": password}) as response:
                if response.status == 200:
                    account.take(await response.json())
                    return
                if response.status == 429:
                    await asyncio.sleep(float(response.headers.get("Retry-After", "5")))
                    continue
                raise SetupFailed(f"login of {account.username} answered {response.status}: {await response.text()}")
        raise SetupFailed(f"login of {account.username} stayed rate limited")

    async def ensure_fresh(self, account: Account) -> None:
        """Refresh the account's tokens a minute before the access token expires (once, for all its users)."""
        if account.expires_at - time.monotonic() > 60:
            return
        async with account._lock:
            if account.expires_at - time.monotonic() > 60:
                return
            async with self.http.post(f"{self.api}/auth/refresh",
                                      json={"refresh_token": account.refresh_token}) as response:
                if response.status == 200:
                    account.take(await response.json())
                    return
            await self.login(account, PASSWORD)

    async def start(self) -> None:
        username, password = self.admin_credentials
        self.admin = Account(username, "admin", None)
        await self.login(self.admin, password)

    async def dispatcher_room(self, areas: list[str], cap: int) -> dict[str, int]:
        """How many more active dispatchers each area may have."""
        room = {}
        for area in areas:
            count, cursor = 0, None
            while True:
                params = {"role": "dispatcher", "dispatch_area": area, "is_active": "true", "limit": "200"}
                if cursor:
                    params["cursor"] = cursor
                async with self.http.get(f"{self.api}/users", params=params, headers=self.admin.headers) as response:
                    if response.status != 200:
                        raise SetupFailed(f"listing users answered {response.status}: {await response.text()}")
                    page = await response.json()
                count += len(page["items"])
                cursor = page["next_cursor"]
                if not cursor:
                    break
            room[area] = max(0, cap - count)
        return room

    async def create(self, role: str, area: str | None) -> Account:
        name = f"lt{self.run_id}{role[0]}{len(self.created):03d}"
        body = {"username": name, "email": f"{name}@loadtest.bagtrack.example.com", "password": PASSWORD, "role": role}
        if area:
            body["dispatch_area"] = area
        async with self.http.post(f"{self.api}/users", json=body, headers=self.admin.headers) as response:
            if response.status != 201:
                raise SetupFailed(f"creating {name} answered {response.status}: {await response.text()}")
            account = Account(name, role, area, user_id=(await response.json())["id"])
        self.created.append(account)
        return account

    async def provision(self, *, dispatcher_users: int, lookup_users: int, areas: list[str], cap_per_area: int,
                        biller_users: int = 0) -> tuple[list[Account], list[Account], list[Account]]:
        """Dispatcher accounts spread over the areas (within the cap), biller accounts for the lookups, and
        biller accounts for the billers."""
        room = await self.dispatcher_room(areas, cap_per_area)
        wanted = math.ceil(dispatcher_users / USERS_PER_DISPATCHER_ACCOUNT) if dispatcher_users else 0
        plan: list[str] = []
        while len(plan) < wanted and any(room.values()):
            for area in areas:
                if room[area] and len(plan) < wanted:
                    plan.append(area)
                    room[area] -= 1
        if wanted and not plan:
            raise SetupFailed(f"no area has room for another dispatcher (cap {cap_per_area}); remove some first")
        dispatchers = [await self.create("dispatcher", area) for area in plan]
        lookups = [await self.create("biller", None)
                   for _ in range(min(MAX_LOOKUP_ACCOUNTS, math.ceil(lookup_users / USERS_PER_LOOKUP_ACCOUNT)))]
        billers = [await self.create("biller", None)
                   for _ in range(min(MAX_LOOKUP_ACCOUNTS, math.ceil(biller_users / USERS_PER_BILLER_ACCOUNT)))]
        # Logins a few at a time: argon2 is deliberately slow, and the per-address limit applies to us too.
        gate = asyncio.Semaphore(4)

        async def login(account: Account) -> None:
            async with gate:
                await self.login(account, PASSWORD)

        await asyncio.gather(*(login(a) for a in dispatchers + lookups + billers))
        return dispatchers, lookups, billers

    async def remove_all(self) -> int:
        """Delete every account this run created; returns how many went."""
        removed = 0
        if self.admin is None:
            return removed
        await self.ensure_fresh_admin()
        for account in self.created:
            if account.user_id is None:
                continue
            async with self.http.delete(f"{self.api}/users/{account.user_id}", headers=self.admin.headers) as response:
                if response.status in (204, 404):
                    removed += 1
        self.created.clear()
        return removed

    async def ensure_fresh_admin(self) -> None:
        if self.admin.expires_at - time.monotonic() <= 60:
            await self.login(self.admin, self.admin_credentials[1])
