"""Auth administration from the shell.

  python -m services.auth.cli create-admin --username NAME [--email E]   (password from BAGTRACK_ADMIN_PASSWORD or a prompt)
  python -m services.auth.cli unlock --username NAME                     (lift a lockout, reset the failure count)
  python -m services.auth.cli generate-key > signing-key.pem              (an Ed25519 key for AUTH_JWT_PRIVATE_KEY_FILE)
  python -m services.auth.cli rotate-key [--activate-in SECONDS] [--force] (a new signing key: services/auth/keys.py)
  python -m services.auth.cli keys                                        (the key ring: kid, state, times)
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from services.auth import keys, service
from services.auth.config import Settings
from services.auth.passwords import Passwords
from services.auth.schemas import UserCreate
from shared.cache import MemoryCache
from shared.db import Database
from shared.errors import ProblemError
from shared.timeutil import utcnow


async def _with_context(settings: Settings, action):
    passwords = await Passwords.create(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                                       parallelism=settings.argon2_parallelism, max_concurrent=1)
    # Nothing signs a token from the shell: an empty key ring.
    return await _with_db(settings, lambda db: action(
        service.AuthContext(settings, db, MemoryCache("auth"), passwords, keys.KeyRing(()))))


async def _with_db(settings: Settings, action):
    db = Database(settings)
    try:
        return await action(db)
    finally:
        await db.dispose()


async def _create_admin(settings: Settings, username: str, email: str, password: str):
    return await _with_context(settings, lambda ctx: service.create_user(
        ctx=ctx, user_in=UserCreate(username=username, email=email, password=password, role="admin")))


def create_admin(args: argparse.Namespace, settings: Settings) -> int:
    password = os.environ.get("BAGTRACK_ADMIN_PASSWORD") or getpass.getpass("password for the new admin: ")
    email = args.email or f"{args.username.lower()}@bagtrack.example.com"
    try:
        user = asyncio.run(_create_admin(settings, args.username, email, password))
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except ValueError as exc:  # pydantic validation of username/email
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created admin {user['username']!r} (id {user['id']})")
    return 0


def unlock(args: argparse.Namespace, settings: Settings) -> int:
    try:
        user = asyncio.run(_with_context(settings, lambda ctx: service.unlock_user(ctx=ctx, username=args.username)))
    except ProblemError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    print(f"unlocked {user['username']!r} (id {user['id']})")
    return 0


def rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    try:
        rotation = asyncio.run(_with_db(settings, lambda db: keys.rotate(
            db, MemoryCache("auth"), settings, activate_in=args.activate_in, force=args.force)))
    except keys.RotationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"new signing key {rotation.kid}: published now, signs from {keys.iso(rotation.activates_at)}")
    for kid, at in rotation.retiring:
        print(f"key {kid} retires (leaves the JWKS) at {keys.iso(at)}")
    if rotation.cut_short:
        print(f"--force: unexpired access tokens signed by {', '.join(rotation.cut_short)} are refused from "
              f"{keys.iso(rotation.activates_at)} (by each verifier once it next fetches the JWKS); "
              "their holders refresh")
    return 0


def list_keys(settings: Settings) -> int:
    ring = asyncio.run(_with_db(settings, lambda db: keys.load_ring(db, with_retired=True)))
    now = utcnow()
    print(f"{'kid':<44} {'state':<9} {'created':<26} {'activates':<26} retired")
    for key in reversed(ring.keys):  # newest first
        created, activates = keys.iso(key.created_at), keys.iso(key.activates_at)
        retired = keys.iso(key.retired_at) if key.retired_at else "-"
        print(f"{key.kid:<44} {ring.state(key, now):<9} {created:<26} {activates:<26} {retired}")
    return 0


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email")
    unlock_cmd = commands.add_parser("unlock", help="lift a user's lockout and reset their failure count")
    unlock_cmd.add_argument("--username", required=True)
    commands.add_parser("generate-key", help="print a new Ed25519 signing key (PEM)")
    rotate = commands.add_parser("rotate-key", help="add a signing key: published now, signing after a delay")
    rotate.add_argument("--activate-in", type=float, metavar="SECONDS",
                        help="seconds until it signs (default AUTH_KEY_ACTIVATION_DELAY)")
    rotate.add_argument("--force", action="store_true",
                        help="rotate even if the previous key's tokens are still live (they are then refused) or "
                             "another new key waits to activate (it is replaced)")
    commands.add_parser("keys", help="list the signing-key ring")
    args = parser.parse_args(argv)
    if args.command == "create-admin":
        return create_admin(args, settings or Settings())
    if args.command == "unlock":
        return unlock(args, settings or Settings())
    if args.command == "rotate-key":
        return rotate_key(args, settings or Settings())
    if args.command == "keys":
        return list_keys(settings or Settings())
    sys.stdout.write(keys.generate_pem().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
