"""Password policy and argon2id hashing: CPU-bound by design, so it runs in worker threads, a few at a time,
and never while a database connection is held."""
from __future__ import annotations

import re

import anyio.to_thread
from anyio import CapacityLimiter
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 128  # bounds the work one login can make argon2 do

_RULES = (
    (re.compile(r"[A-Z]"), "an upper-case letter"),
    (re.compile(r"[a-z]"), "a lower-case letter"),
    (re.compile(r"[0-9]"), "a digit"),
    (re.compile(r"[^A-Za-z0-9]"), "a symbol"),
)


def password_problems(password: str) -> list[str]:
    """What the password lacks under the policy; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    problems += [what for pattern, what in _RULES if not pattern.search(password)]
    return problems


class Passwords:
    """argon2id with explicit parameters; at most `max_concurrent` hashes at once (each in a worker thread)
    bounds memory and CPU. Built on the event loop with `await Passwords.create(...)`."""

    def __init__(self, hasher: PasswordHasher, max_concurrent: int, dummy_hash: str) -> None:
        self._hasher = hasher
        self._slots = CapacityLimiter(max_concurrent)
        # Verified against when the username is unknown, so both paths cost one argon2 verification.
        self._dummy_hash = dummy_hash

    @classmethod
    async def create(cls, *, time_cost: int, memory_kib: int, parallelism: int, max_concurrent: int) -> "Passwords":
        hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)
        dummy = await anyio.to_thread.run_sync(hasher.hash, "not a real password: equal timing for unknown users")
        return cls(hasher, max_concurrent, dummy)

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hasher.hash, password, limiter=self._slots)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await anyio.to_thread.run_sync(self._verify, password_hash, password, limiter=self._slots)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy_hash, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
