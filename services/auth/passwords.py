"""Password policy and argon2id hashing: CPU-bound by design, so it runs in worker threads, a few at a time,
and never while a database connection is held."""
from __future__ import annotations

import ctypes
import re

import anyio.to_thread
from anyio import CapacityLimiter
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
MAX_LENGTH = 128  # bounds the work one login can make argon2 do

M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number (malloc.h)
OWN_MAPPING_FROM = 1 << 20  # bytes: argon2's buffer (19 MiB in production) is far above it

_RULES = (
    (re.compile(r"[A-Z]"), "an upper-case letter"),
    (re.compile(r"[a-z]"), "a lower-case letter"),
    (re.compile(r"[0-9]"), "a digit"),
    (re.compile(r"[^A-Za-z0-9]"), "a symbol"),
)


# The policy in words, for forms (GET /auth/reference).
PASSWORD_RULE = (f"{MIN_LENGTH}-{MAX_LENGTH} characters with " + ", ".join(what for _, what in _RULES[:-1])
                 + f" and {_RULES[-1][1]}")


def password_problems(password: str) -> list[str]:
    """What the password lacks under the policy; empty when it is acceptable."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"at most {MAX_LENGTH} characters")
    problems += [what for pattern, what in _RULES if not pattern.search(password)]
    return problems


def unmap_hash_buffers_when_freed() -> bool:
    """Have glibc malloc give every allocation of OWN_MAPPING_FROM bytes or more (argon2's buffer) its own mmap,
    unmapped when freed. False when the C library is not glibc (nothing is changed then).

    Why: glibc raises its mmap threshold to the size of the first large block freed, so every later 19 MiB argon2
    buffer is carved from the hashing thread's malloc arena, and an arena keeps a freed block resident. After a login
    storm each arena that hashed held one buffer for good (observed: 122 -> 614 MB; on 2 cores 116 -> 197 MiB).
    A fixed threshold turns that adjustment off: what hashing holds is what is being hashed, at most
    max_concurrent_hashes buffers, and RSS falls back as each hash ends (measured: settles at ~101 MiB).
    The price is faulting the buffer in afresh each hash: 38 ms instead of 24 with 4 KiB pages, 25 ms with huge
    pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, set by deploy/Dockerfile and scripts/stack.py).
    Process-wide; called once at start-up, before the first hash.
    """
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return libc.mallopt(M_MMAP_THRESHOLD, OWN_MAPPING_FROM) == 1


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
