"""The ring of Ed25519 keys that sign access tokens, kept in auth's database, and the JWKS that publishes them.

A key's life: rotated in, it is published at once (the JWKS) and signs from `activates_at`; when the next key
activates it becomes the previous key (still published: tokens it signed live until they expire); when the key
after that activates it is retired (no longer published). So the JWKS holds the next key (if any), the current and
the previous one. Which key signs is decided by the clock against `activates_at`, not by when a replica last read
the ring (every AUTH_KEY_RING_RELOAD_SECONDS), so every replica switches at the same moment.

Why no verifier refuses a fresh token: a verifier refetches the JWKS when it meets an unknown kid, at most once per
JWKS_MIN_REFRESH, and a new key is published AUTH_KEY_ACTIVATION_DELAY > JWKS_MIN_REFRESH + staleness before it
signs (staleness: how far behind the database a fetched JWKS may be, Settings.jwks_staleness). A verifier whose last
fetch could not yet show the new key made it before publication + staleness; the first token with the new kid is
signed at activation or later, more than JWKS_MIN_REFRESH after that fetch, so the verifier refetches and gets the
key. A verifier whose last fetch could show it already holds it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import insert, or_, select, update

from services.auth.config import Settings
from services.auth.models import SigningKeyRow
from services.auth.repository import serialize
from shared.cache import Cache
from shared.db import Database, Row
from shared.security import LEEWAY
from shared.timeutil import as_utc, utcnow
from shared.unit_of_work import UnitOfWork, run_write

log = logging.getLogger("bagtrack.auth.keys")

signing_keys = SigningKeyRow.__table__
RING_LOCK = "signing_keys"  # seeding and rotations, one at a time across replicas and the CLI


class SigningKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        self.kid = _thumbprint(jwk)
        self.public_jwk = {**jwk, "kid": self.kid, "alg": "EdDSA", "use": "sig"}

    @classmethod
    def from_pem(cls, pem: bytes) -> "SigningKey":
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key (PEM, PKCS#8)")
        return cls(key)


@dataclass(frozen=True)
class RingKey:
    key: SigningKey
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None

    @property
    def kid(self) -> str:
        return self.key.kid

    def retired(self, now: datetime) -> bool:
        return self.retired_at is not None and self.retired_at <= now


class KeyRing:
    """Keys as read from the database, oldest activation first; each one's state follows the clock."""

    def __init__(self, keys: Iterable[RingKey]) -> None:
        self.keys = sorted(keys, key=lambda k: k.activates_at)

    def live(self, now: datetime | None = None) -> list[RingKey]:
        """The published keys: next, current, previous."""
        now = now or utcnow()
        return [k for k in self.keys if not k.retired(now)]

    def current(self, now: datetime | None = None) -> RingKey | None:
        now = now or utcnow()
        active = [k for k in self.live(now) if k.activates_at <= now]
        return active[-1] if active else None

    def signing(self, now: datetime | None = None) -> SigningKey:
        current = self.current(now)
        if current is None:
            raise RuntimeError("the key ring has no current signing key")
        return current.key

    def state(self, key: RingKey, now: datetime) -> str:
        if key.retired(now):
            return "retired"
        if key.activates_at > now:
            return "next"
        return "current" if key is self.current(now) else "previous"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.key.public_jwk for k in self.live()]}


async def load_ring(db: Database, *, with_retired: bool = False) -> KeyRing:
    query = select(signing_keys)
    if not with_retired:
        query = query.where(_live(utcnow()))
    async with db.read() as conn:
        return KeyRing(map(_ring_key, await conn.rows(query)))


async def seed_ring(db: Database, cache: Cache, settings: Settings) -> None:
    """On an empty ring, import the configured key as the current one. Replicas starting together serialise on
    RING_LOCK (an advisory lock on PostgreSQL, SQLite's write lock), so whichever comes first seeds the only key."""
    async with db.read() as conn:
        if await conn.scalar(select(signing_keys.c.kid).limit(1)) is not None:
            return
    pem = configured_pem(settings)
    key = SigningKey.from_pem(pem)

    async def insert_if_empty(work: UnitOfWork) -> bool:
        await serialize(work, RING_LOCK)
        if await work.scalar(select(signing_keys.c.kid).limit(1)) is not None:
            return False
        now = utcnow()
        await work.execute(insert(signing_keys).values(kid=key.kid, private_key_pem=pem.decode(), created_at=now,
                                                       activates_at=now))
        return True

    if (await run_write(db, cache, insert_if_empty)).result:
        log.info("key ring seeded with the configured signing key %s", key.kid)


class RotationRefused(Exception):
    """A rotation that could make a verifier refuse a live token (or is not possible yet)."""


@dataclass(frozen=True)
class Rotation:
    kid: str
    activates_at: datetime
    retiring: list[tuple[str, datetime]]  # (kid, when it leaves the JWKS)
    cut_short: list[str]  # kids retired (by --force) while tokens they signed may still be unexpired


async def rotate(db: Database, cache: Cache, settings: Settings, *, activate_in: float | None = None,
                 force: bool = False) -> Rotation:
    """Add a new key, published now and signing `activate_in` seconds from now (AUTH_KEY_ACTIVATION_DELAY by
    default); the previous key retires when it activates.

    Refused while the current key has signed for less than the access-token lifetime + leeway (retiring the
    previous key would cut its live tokens short) and while another new key waits to activate; `force` overrides
    both (the waiting key, which has signed nothing, is retired at once)."""
    delay = settings.key_activation_delay if activate_in is None else activate_in
    if delay <= settings.min_activation_delay:
        raise RotationRefused(f"the activation delay must exceed {settings.min_activation_delay:g} s (JWKS_MIN_REFRESH "
                              "+ JWKS staleness), or a verifier could refuse the new key's first tokens")
    pem = generate_pem()
    new = SigningKey.from_pem(pem)
    lifetime = timedelta(seconds=settings.access_token_ttl + LEEWAY)

    async def add(work: UnitOfWork) -> Rotation:
        await serialize(work, RING_LOCK)
        now = utcnow()
        ring = KeyRing(map(_ring_key, await work.rows(select(signing_keys).where(_live(now)))))
        current = ring.current(now)
        if current is None:
            raise RotationRefused("the key ring is empty: start auth once (it imports the configured key) first")
        waiting = [k for k in ring.live(now) if k.activates_at > now]
        previous = [k for k in ring.live(now) if k.activates_at <= now and k is not current]
        if waiting and not force:
            raise RotationRefused(f"key {waiting[0].kid} already waits to sign from {iso(waiting[0].activates_at)}; "
                                  "rotate after that, or --force to replace it (it has signed nothing)")
        tokens_live_until = current.activates_at + lifetime
        cut_short = [k.kid for k in previous] if now < tokens_live_until else []
        if cut_short and not force:
            raise RotationRefused(
                f"the current key {current.kid} signs only since {iso(current.activates_at)}: tokens of the previous "
                f"key {', '.join(cut_short)} live until {iso(tokens_live_until)} (access-token lifetime + leeway) and "
                "this rotation retires it; rotate after that, or --force to retire it anyway (its unexpired tokens "
                "are then refused and their holders must refresh)")
        activates_at = now + timedelta(seconds=delay)
        retiring = [(k.kid, now) for k in waiting] + [(k.kid, activates_at) for k in previous]
        for kid, at in retiring:
            await work.execute(update(signing_keys).where(signing_keys.c.kid == kid).values(retired_at=at))
        await work.execute(insert(signing_keys).values(kid=new.kid, private_key_pem=pem.decode(), created_at=now,
                                                       activates_at=activates_at))
        return Rotation(new.kid, activates_at, retiring, cut_short)

    return (await run_write(db, cache, add)).result


def configured_pem(settings: Settings) -> bytes:
    """AUTH_JWT_PRIVATE_KEY(_FILE); in development, a key generated once under var/ and reused."""
    if settings.jwt_private_key:
        return settings.jwt_private_key.get_secret_value().encode()
    if settings.jwt_private_key_file:
        return Path(settings.jwt_private_key_file).read_bytes()
    if settings.environment == "production":
        raise RuntimeError("no signing key configured")
    return dev_key_pem(Path(settings.var_dir) / "auth-signing-key.pem")


def generate_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dev_key_pem(path: Path) -> bytes:
    """Read the development key, creating it first if absent. Replicas may race here: the key is written
    to a private temporary file and linked into place, so nobody ever reads a half-written key."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(generate_pem())
    try:
        os.link(tmp, path)
        log.info("generated a development signing key at %s", path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _live(now: datetime):
    return or_(signing_keys.c.retired_at.is_(None), signing_keys.c.retired_at > now)


def _ring_key(row: Row) -> RingKey:
    return RingKey(SigningKey.from_pem(row["private_key_pem"].encode()), as_utc(row["created_at"]),
                   as_utc(row["activates_at"]), as_utc(row["retired_at"]))


def iso(moment: datetime) -> str:
    """A moment as the CLI and the refusals print it: ISO 8601, whole seconds, UTC offset."""
    return moment.isoformat(timespec="seconds")


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a stable key id derived from the public key itself."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
