"""Parts: every dashboard answer is composed of parts, each one source's answer to one question, held and
refreshed on its own so that a request never waits on a source.

- **Keys** (services/dashboard/keys.py) name each part: `scan-stats:jaipur`, `bill-trends:14`, `bag:all:SB00001`.
- **Held three times.** In the shared cache (Redis: every replica reads what any replica refreshed), in this
  process (a bounded copy, for while Redis is away or has lost it) and, for the aggregates and series (not
  lookups), in the dashboard's own database (`parts`, written behind each successful refresh): after a Redis
  restart and a dashboard restart the last good values come back from there, marked stale until refreshed.
- **Stale-while-revalidate.** A request answers from the freshest value held; past its ttl it starts a refresh
  in the background and answers at once. Only a part never fetched yet (and a lookup past its short ttl) waits
  for its source, at most `first_fetch_wait`; then the part is `unavailable` (or the lookup's stale value) and
  the fetch goes on in the background, filling the cache for the next request.
- **One refresh per key.** In a process, one task per key (single flight); across replicas, a lock in the cache
  (SET NX PX) taken by the task, which first re-reads the value: whoever lost the race finds it refreshed and
  asks nobody. A replica that finds the lock held watches the cache for the holder's result. A failed refresh is
  tried again after `retry_after_failure`, not on every request: a dead source is asked once per key per retry
  interval across all replicas. Lookups skip the cross-replica lock (their answer may be a 404, which is not
  held): one call per code per replica at a time.
- **Freshness.** A held part is `fresh` unless its last refresh failed, its source is known down (its breaker
  is open, or the last call to it from any replica failed), it was read back from the database and not
  refreshed since, or no refresh has succeeded within its ttl plus the refresh budget; then it is `stale`, with
  its age. Nothing held: `unavailable`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Sequence

from services.dashboard import repository as repo
from services.dashboard.clients import SourceFailed, SourceRefused, get_json, is_breaker_open
from services.dashboard.config import Settings
from services.dashboard.held import Absent, Entry, Outcome, Reading, epoch, iso, source_as_of
from services.dashboard.keys import PartSpec, spec_for
from services.dashboard.metrics import PART_AGE, PART_REFRESHES
from shared.cache import Cache
from shared.db import Database
from shared.http import ResilientClient
from shared.unit_of_work import run_write

log = logging.getLogger("bagtrack.dashboard.parts")

WATCH_EVERY = 0.02  # seconds between looks at the cache while another replica refreshes a key


class PartStore:
    """Holds, reads and refreshes parts (the module docstring says how)."""

    def __init__(self, settings: Settings, db: Database, cache: Cache, clients: dict[str, ResilientClient]) -> None:
        self.settings = settings
        self.db = db
        self.cache = cache
        self.clients = clients
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"  # this process, as the holder of refresh locks
        self._inflight: dict[str, asyncio.Task] = {}
        self._local: OrderedDict[str, Entry] = OrderedDict()
        self._outcomes: dict[str, Outcome] = {}  # this process's last call to each source
        self._background: set[asyncio.Task] = set()  # write-behinds, referenced until done

    def spec(self, key: str) -> PartSpec:
        return spec_for(key, self.settings)

    async def run_until_shutdown(self) -> None:
        """Lives as long as the process (a background job): at shutdown, which cancels the jobs before it closes
        the clients and the database, it cancels the refreshes and write-behinds still running, so none is left
        to fail against a closed client."""
        try:
            await asyncio.Event().wait()
        finally:
            pending = [*self._inflight.values(), *self._background]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- reading -------------------------------------------------------------------------------------------

    async def read(self, specs: Sequence[PartSpec], *, wait: float, wait_if_expired: bool = False) -> Reading:
        """The held value of each part, starting a refresh of each that is due; waits (at most `wait` seconds in
        all) for the parts that hold nothing, and with `wait_if_expired` also for those past their ttl."""
        started = asyncio.get_running_loop().time()
        entries, shared = await self._held(specs)
        now = time.time()
        waiting: dict[str, asyncio.Task] = {}
        for spec in specs:
            entry = entries[spec.key]
            if self.due(spec, entry, now):
                task = self._trigger(spec)
                if entry is None or not entry.held or wait_if_expired:
                    waiting[spec.key] = task
        if waiting:
            remaining = wait - (asyncio.get_running_loop().time() - started)
            if remaining > 0:
                await asyncio.wait(waiting.values(), timeout=remaining)
            for key, task in waiting.items():
                result = task.result() if task.done() and not task.cancelled() else None
                # An unfinished first fetch may still have read the database's last good value meanwhile.
                entries[key] = result if result is not None else self._local.get(key, entries[key])
        down = {spec.source: self._source_down(spec.source, shared.get(spec.source)) for spec in specs}
        for spec in specs:
            entry = entries[spec.key]
            if isinstance(entry, Entry) and entry.failed_last:
                down[spec.source] = True
        return Reading(entries, down)

    def due(self, spec: PartSpec, entry: Entry | None, now: float) -> bool:
        """Whether a part needs a refresh: nothing held, read back from the database, or past its ttl — unless a
        refresh failed less than `retry_after_failure` ago."""
        if entry is None:
            return True
        if entry.failed_at is not None and now - entry.failed_at < self.settings.retry_after_failure:
            return False
        return not entry.held or entry.restored or now - entry.refreshed_at >= spec.ttl

    def view(self, spec: PartSpec, reading: Reading) -> dict[str, Any]:
        """A part as an answer shows it: `{status, as_of, age_seconds, source, data}`."""
        entry = reading.entries.get(spec.key)
        if not isinstance(entry, Entry) or not entry.held:
            return {"status": "unavailable", "as_of": None, "age_seconds": None, "source": spec.source, "data": None}
        age = max(0.0, reading.now - entry.as_of)
        overdue = reading.now - entry.refreshed_at > spec.ttl + self.settings.refresh_timeout
        stale = entry.restored or entry.failed_last or reading.down.get(spec.source, False) or overdue
        PART_AGE.labels(spec.source, spec.name).set(age)
        return {"status": "stale" if stale else "fresh", "as_of": iso(entry.as_of), "age_seconds": round(age, 1),
                "source": spec.source, "data": entry.data}

    async def _held(self, specs: Sequence[PartSpec]) -> tuple[dict[str, Entry | None], dict[str, Outcome]]:
        """Each part's value from the shared cache (one MGET, with the sources' last outcomes), else this
        process's copy, which then goes back into the cache for the other replicas."""
        sources = sorted({spec.source for spec in specs})
        raw = await self.cache.get_many([spec.key for spec in specs] + [f"source:{name}" for name in sources])
        entries: dict[str, Entry | None] = {}
        for spec, value in zip(specs, raw):
            entry = Entry.decode(value)
            if entry is not None:
                self._remember(spec.key, entry)
            else:
                entry = self._local.get(spec.key)
                if entry is not None:
                    await self.cache.add(spec.key, entry.encode(), spec.keep)
            entries[spec.key] = entry
        shared = {name: outcome for name, value in zip(sources, raw[len(specs):])
                  if (outcome := Outcome.decode(value)) is not None}
        return entries, shared

    def _remember(self, key: str, entry: Entry) -> None:
        self._local[key] = entry
        self._local.move_to_end(key)
        while len(self._local) > self.settings.local_parts_max:
            self._local.popitem(last=False)

    def _source_down(self, source: str, shared: Outcome | None) -> bool:
        if is_breaker_open(self.clients[source]):
            return True
        known = [o for o in (shared, self._outcomes.get(source)) if o is not None]
        return bool(known) and not max(known, key=lambda o: o.at).ok

    # -- refreshing ----------------------------------------------------------------------------------------

    async def refresh(self, key: str) -> None:
        """Refresh one part now, whatever its age (e.g. a new scan was seen), and wait for it (at most the
        refresh budget). Skips the cross-replica lock: the stream's one poller calls it, and a refresh already
        running here may predate what it was called for, so one more follows it."""
        spec = self.spec(key)
        running = self._inflight.get(key)
        if running is not None:
            await asyncio.wait({running})
        await asyncio.wait({self._trigger(spec, force=True)})

    def _trigger(self, spec: PartSpec, *, force: bool = False) -> asyncio.Task:
        """The refresh task of a key: the one already running in this process, or a new one."""
        task = self._inflight.get(spec.key)
        if task is None or task.done():
            task = asyncio.create_task(self._refresh(spec, force=force), name=f"refresh {spec.key}")
            self._inflight[spec.key] = task
            task.add_done_callback(lambda done: self._settled(spec.key, done))
        return task

    def _settled(self, key: str, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _refresh(self, spec: PartSpec, *, force: bool) -> Entry | Absent | None:
        try:
            if spec.lookup or force:
                return await self._fetch(spec, force=force)
            lock = f"lock:{spec.key}"
            if not await self.cache.lock(lock, self.settings.lock_ttl, self.owner):
                PART_REFRESHES.labels(spec.name, "elsewhere").inc()
                return await self._watch(spec)
            try:
                return await self._fetch(spec, force=False)
            finally:
                await self.cache.unlock(lock, self.owner)
        except Exception:  # a bug, not a source failure: logged; the request answers from what is held
            log.exception("refresh of %s failed", spec.key)
            return None

    async def _fetch(self, spec: PartSpec, *, force: bool) -> Entry | Absent | None:
        """Ask the source (unless the part turns out refreshed meanwhile) and hold what it says."""
        entries, _ = await self._held([spec])
        previous = entries[spec.key]
        if spec.persisted and (previous is None or not previous.held):
            previous = await self._restore(spec) or previous
        if not force and previous is not None and not self.due(spec, previous, time.time()):
            PART_REFRESHES.labels(spec.name, "skipped").inc()
            return previous
        asked = time.time()
        try:
            body = await get_json(self.clients[spec.source], spec.path, params=dict(spec.params),
                                  timeout=self.settings.refresh_timeout)
        except SourceRefused as exc:
            if spec.lookup:
                await self._noted(spec.source, ok=True)
                await self._forget(spec.key)
                PART_REFRESHES.labels(spec.name, "absent").inc()
                return Absent(exc.status, exc.detail)
            return await self._failed(spec, previous, str(exc))  # a contract broken, not an answer
        except SourceFailed as exc:
            return await self._failed(spec, previous, str(exc))
        entry = Entry(body, source_as_of(body, asked), time.time())
        await self._hold(spec, entry)
        await self._noted(spec.source, ok=True)
        if spec.persisted:
            self._behind(self._persist(spec, entry))
        PART_REFRESHES.labels(spec.name, "ok").inc()
        return entry

    async def _failed(self, spec: PartSpec, previous: Entry | None, failure: str) -> Entry:
        now = time.time()
        log.info("refresh of %s failed: %s", spec.key, failure)
        entry = (replace(previous, failed_at=now, failure=failure) if previous is not None
                 else Entry(None, 0.0, 0.0, now, failure))
        await self._hold(spec, entry)
        await self._noted(spec.source, ok=False)
        if spec.persisted and entry.held:
            self._behind(self._persist_failure(spec, entry))
        PART_REFRESHES.labels(spec.name, "failed").inc()
        return entry

    async def _watch(self, spec: PartSpec) -> Entry | None:
        """Another replica refreshes this key: its result, as soon as the cache shows it (None if it never does
        within the lock's ttl)."""
        before = self._local.get(spec.key)
        seen = None if before is None else (before.refreshed_at, before.failed_at)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lock_ttl
        while loop.time() < deadline:
            await asyncio.sleep(WATCH_EVERY)
            entry = Entry.decode(await self.cache.get(spec.key))
            if entry is not None and (entry.refreshed_at, entry.failed_at) != seen:
                self._remember(spec.key, entry)
                return entry
        return None

    async def _hold(self, spec: PartSpec, entry: Entry) -> None:
        self._remember(spec.key, entry)
        await self.cache.set(spec.key, entry.encode(), spec.keep)

    async def _forget(self, key: str) -> None:
        self._local.pop(key, None)
        await self.cache.delete(key)

    async def _noted(self, source: str, *, ok: bool) -> None:
        """Record the outcome of a call to a source, for this process and (in the cache) for every replica."""
        outcome = Outcome(time.time(), ok)
        self._outcomes[source] = outcome
        await self.cache.set(f"source:{source}", outcome.encode(), self.settings.keep_parts)

    # -- the database ---------------------------------------------------------------------------------------

    async def _restore(self, spec: PartSpec) -> Entry | None:
        """The part's last good value from the database (held in this process and, unless a replica has put a
        newer one there meanwhile, the cache), marked `restored`: stale until refreshed."""
        try:
            async with self.db.read() as conn:
                row = await repo.load_part(conn, spec.key)
        except Exception as exc:  # our own database away: answer from what the sources say, if they do
            log.warning("cannot read part %s from the database: %s", spec.key, exc)
            return None
        if row is None:
            return None
        entry = Entry(json.loads(row["payload"]), epoch(row["as_of"]), epoch(row["refreshed_at"]),
                      epoch(row["failed_at"]), row["failure"], restored=True)
        self._remember(spec.key, entry)
        await self.cache.add(spec.key, entry.encode(), spec.keep)
        return entry

    def _behind(self, write) -> None:
        """Run a database write behind the refresh: the answer never waits on it."""
        task = asyncio.create_task(write)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _persist(self, spec: PartSpec, entry: Entry) -> None:
        payload = json.dumps(entry.data, separators=(",", ":"))
        try:
            await run_write(self.db, self.cache, lambda work: repo.save_part(
                work, key=spec.key, source=spec.source, payload=payload, as_of=_dt(entry.as_of),
                refreshed_at=_dt(entry.refreshed_at)))
        except Exception as exc:  # the cache still holds it; the next refresh writes again
            log.warning("part %s not written to the database: %s", spec.key, exc)

    async def _persist_failure(self, spec: PartSpec, entry: Entry) -> None:
        try:
            await run_write(self.db, self.cache, lambda work: repo.note_failure(
                work, key=spec.key, failed_at=_dt(entry.failed_at), failure=entry.failure or ""))
        except Exception as exc:
            log.warning("failure of part %s not written to the database: %s", spec.key, exc)


def _dt(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)
