"""The signing-key ring: seeding on first start, two-phase rotation, retirement, the refusals and the CLI.

Its own database and app per backend, with short delays (JWKS_MIN_REFRESH 1 s, ring reload 0.5 s), so a rotation
activates within seconds and the tests wait for the real activation time.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlalchemy import delete, select

from services.auth import cli, keys, service
from services.auth.app import create_app
from services.auth.config import Settings
from services.auth.models import SigningKeyRow
from shared import migrate
from shared.cache import MemoryCache
from shared.db import Database
from shared.security import LEEWAY
from shared.timeutil import utcnow
from tests.auth.conftest import ADMIN, make_settings
from tests.support import db_session, wait_for

ROOT = Path(__file__).resolve().parents[2]
ACTIVATE_IN = 2.0  # above the minimum these settings allow (1 s refresh + 0.5 s reload + 0 s max-age)
FAST = dict(jwks_min_refresh=1, key_ring_reload_seconds=0.5, key_activation_delay=3, login_limit_per_ip=1000)


@pytest.fixture(scope="module")
def settings(backend, tmp_path_factory) -> Settings:
    var_dir = str(tmp_path_factory.mktemp(f"keys-{backend.name}"))
    database = backend.database_url and backend.database_url + "_keys"
    settings = make_settings(backend, var_dir=var_dir, shared_database_url=database, **FAST)
    migrate.upgrade("auth", settings.database_url)
    return settings


@pytest.fixture(scope="module")
def running(settings):
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def client(running):
    """The app on a ring holding only the configured key, as on a first start."""
    with db_session(running.app) as session:
        session.execute(delete(SigningKeyRow))
        session.commit()
    app = running.app
    running.portal.call(keys.seed_ring, app.state.db, app.state.cache, app.state.settings)
    running.portal.call(service.reload_signing_keys, app)
    running.portal.call(app.state.cache.clear)
    wait_for(lambda: published(running) == {configured_kid(app.state.settings)}, timeout=5,
          what="the seeded ring")
    return running


def configured_kid(settings: Settings) -> str:
    return keys.SigningKey.from_pem(keys.configured_pem(settings)).kid


def login(client) -> dict:
    response = client.post("/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert response.status_code == 200, response.text
    return response.json()


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def me(client, token: str) -> int:
    return client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code


def published(client) -> set[str]:
    return {k["kid"] for k in client.get("/auth/jwks").json()["keys"]}


def rotate(settings, capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["rotate-key", *args], settings=settings)
    out, err = capsys.readouterr()
    return code, out, err


def rotated(settings, capsys, *args: str) -> tuple[str, datetime]:
    """Rotate through the CLI; the new kid and its activation time, read back from the ring."""
    code, out, err = rotate(settings, capsys, "--activate-in", str(ACTIVATE_IN), *args)
    assert code == 0, err
    kid = out.split()[3].rstrip(":")
    assert out.startswith(f"new signing key {kid}: published now, signs from ")
    ring = asyncio.run(_ring(settings))
    return kid, next(k.activates_at for k in ring.keys if k.kid == kid)


def activated(client, kid: str, activates_at: datetime) -> dict:
    """Log in until a token signed by `kid` comes back; every token before it carries the old key, every token
    from the activation on the new one (iat is whole seconds: the activation's own second may go either way)."""
    deadline = time.monotonic() + (activates_at - utcnow()).total_seconds() + 5
    boundary = int(activates_at.timestamp())

    def new_pair():
        pair = login(client)
        signer = kid_of(pair["access_token"])
        iat = jwt.decode(pair["access_token"], options={"verify_signature": False})["iat"]
        assert (signer == kid) == (iat >= boundary) or iat == boundary, (signer, iat, activates_at)
        return pair if signer == kid else None

    return wait_for(new_pair, timeout=deadline - time.monotonic(), what=f"key {kid} to sign")


def age_ring(client, seconds: float) -> None:
    """Move every key's times back, as if the ring were `seconds` older (a key that has signed for a TTL)."""
    shift = timedelta(seconds=seconds)
    with db_session(client.app) as session:
        for row in session.execute(select(SigningKeyRow)).scalars():
            row.created_at, row.activates_at = row.created_at - shift, row.activates_at - shift
            if row.retired_at is not None:
                row.retired_at -= shift
        session.commit()
    client.portal.call(service.reload_signing_keys, client.app)


async def _ring(settings: Settings, **options) -> keys.KeyRing:
    db = Database(settings)
    try:
        return await keys.load_ring(db, **options)
    finally:
        await db.dispose()


def test_an_empty_ring_imports_the_configured_key(client, settings):
    ring = asyncio.run(_ring(settings))
    assert [k.kid for k in ring.keys] == [configured_kid(settings)]
    assert ring.signing().kid == configured_kid(settings) and published(client) == {configured_kid(settings)}
    assert kid_of(login(client)["access_token"]) == configured_kid(settings)
    asyncio.run(_seed(with_configured_key(settings)))  # a ring that has a key ignores another configured one
    assert [k.kid for k in asyncio.run(_ring(settings)).keys] == [configured_kid(settings)]


def with_configured_key(settings: Settings) -> Settings:
    """The settings of a replica configured with a key of its own."""
    return settings.model_copy(update={"jwt_private_key": SecretStr(keys.generate_pem().decode())})


async def _seed(settings: Settings) -> None:
    db = Database(settings)
    try:
        await keys.seed_ring(db, MemoryCache("auth"), settings)
    finally:
        await db.dispose()


def test_replicas_starting_at_once_on_an_empty_ring_seed_one_key(client, settings):
    with db_session(client.app) as session:
        session.execute(delete(SigningKeyRow))
        session.commit()
    replicas = [with_configured_key(settings) for _ in range(6)]

    async def start_all():
        await asyncio.gather(*(_seed(replica) for replica in replicas))

    asyncio.run(start_all())
    ring = asyncio.run(_ring(settings))
    assert len(ring.keys) == 1
    assert ring.keys[0].kid in {configured_kid(replica) for replica in replicas}


def test_a_rotated_key_is_published_at_once_and_signs_from_its_activation(client, settings, capsys):
    old = configured_kid(settings)
    before = login(client)
    kid, activates_at = rotated(settings, capsys)
    assert activates_at > utcnow()
    wait_for(lambda: published(client) == {old, kid}, timeout=5, what="the next key in the JWKS")
    if utcnow() < activates_at - timedelta(seconds=1):
        assert kid_of(login(client)["access_token"]) == old  # published, not yet signing
    after = activated(client, kid, activates_at)
    assert me(client, after["access_token"]) == 200 and me(client, before["access_token"]) == 200
    assert published(client) == {old, kid}  # current and previous
    refreshed = client.post("/auth/refresh", json={"refresh_token": before["refresh_token"]})
    assert refreshed.status_code == 200 and kid_of(refreshed.json()["access_token"]) == kid
    assert client.get("/auth/jwks").headers["Cache-Control"] == f"public, max-age={settings.jwks_max_age}"


def test_a_second_rotation_retires_the_oldest_key_when_the_next_activates(client, settings, capsys):
    first = configured_kid(settings)
    second, activates_at = rotated(settings, capsys)
    activated(client, second, activates_at)
    age_ring(client, settings.access_token_ttl + LEEWAY + 1)  # the second key has signed for a whole token life
    third, activates_at = rotated(settings, capsys)
    wait_for(lambda: published(client) == {first, second, third}, timeout=5,
          what="next, current and previous in the JWKS")
    activated(client, third, activates_at)
    wait_for(lambda: published(client) == {second, third}, timeout=5, what="the oldest key retired")
    ring = asyncio.run(_ring(settings, with_retired=True))
    now = utcnow()
    assert {k.kid: ring.state(k, now) for k in ring.keys} == {first: "retired", second: "previous", third: "current"}
    assert next(k for k in ring.keys if k.kid == first).retired_at == activates_at


def test_rotation_is_refused_while_the_previous_keys_tokens_live_unless_forced(client, settings, capsys):
    first = configured_kid(settings)
    first_token = login(client)["access_token"]
    second, activates_at = rotated(settings, capsys)

    code, _, err = rotate(settings, capsys, "--activate-in", str(ACTIVATE_IN))
    assert code == 1 and f"key {second} already waits to sign" in err
    second_token = activated(client, second, activates_at)["access_token"]

    code, _, err = rotate(settings, capsys, "--activate-in", str(ACTIVATE_IN))
    assert code == 1 and f"tokens of the previous key {first} live until" in err and "--force" in err
    assert published(client) == {first, second}

    code, out, _ = rotate(settings, capsys, "--activate-in", str(ACTIVATE_IN), "--force")
    third = out.split()[3].rstrip(":")
    assert code == 0 and f"--force: unexpired access tokens signed by {first} are refused from" in out
    activates_at = next(k.activates_at for k in asyncio.run(_ring(settings)).keys if k.kid == third)
    third_token = activated(client, third, activates_at)["access_token"]
    wait_for(lambda: published(client) == {second, third}, timeout=5, what="the first key retired")
    assert me(client, second_token) == 200 and me(client, third_token) == 200
    # The first key's live token is refused once the verifier has refetched the keys (a new kid makes it).
    wait_for(lambda: me(client, first_token) == 401, timeout=5, what="the forced retirement")


def test_the_activation_delay_must_outlast_a_verifier_refetch(settings, capsys):
    with pytest.raises(ValidationError, match="AUTH_KEY_ACTIVATION_DELAY"):
        Settings(key_activation_delay=9, jwks_min_refresh=5, key_ring_reload_seconds=2)
    assert Settings(key_activation_delay=10).min_activation_delay == 9
    code, _, err = rotate(settings, capsys, "--activate-in", "1.5")
    assert code == 1 and "must exceed 1.5 s" in err


def test_the_cli_lists_and_rotates_the_ring_as_a_process(client, settings):
    env = {**os.environ, "AUTH_DATABASE_URL": settings.database_url, "BAGTRACK_VAR_DIR": str(settings.var_dir),
           "JWKS_MIN_REFRESH": "1", "AUTH_KEY_RING_RELOAD_SECONDS": "0.5"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "services.auth.cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    rotation = run("rotate-key", "--activate-in", "30")
    assert rotation.returncode == 0, rotation.stderr
    kid = rotation.stdout.split()[3].rstrip(":")
    again = run("rotate-key")
    assert again.returncode == 1 and "already waits to sign" in again.stderr
    listing = run("keys")
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["kid", "state", "created", "activates", "retired"]
    assert [row.split()[:2] for row in rows] == [[kid, "next"], [configured_kid(settings), "current"]]
