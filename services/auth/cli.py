"""Auth administration from the shell.

  python -m services.auth.cli create-admin --username NAME [--email E]   (password from BAGTRACK_ADMIN_PASSWORD or a prompt)
  python -m services.auth.cli unlock --username NAME                     (lift a lockout, reset the failure count)
  python -m services.auth.cli generate-key > signing-key.pem              (an Ed25519 key for AUTH_JWT_PRIVATE_KEY_FILE)
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from services.auth import service
from services.auth.config import Settings
from services.auth.keys import SigningKey, generate_pem
from services.auth.passwords import Passwords
from services.auth.schemas import UserCreate
from shared.cache import MemoryCache
from shared.db import Database
from shared.errors import ProblemError


async def _with_context(settings: Settings, action):
    passwords = await Passwords.create(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib,
                                       parallelism=settings.argon2_parallelism, max_concurrent=1)
    db = Database(settings)
    ctx = service.AuthContext(settings, db, MemoryCache("auth"), passwords, SigningKey.load(settings))
    try:
        return await action(ctx)
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


def main(argv: list[str] | None = None, *, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.auth.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email")
    unlock_cmd = commands.add_parser("unlock", help="lift a user's lockout and reset their failure count")
    unlock_cmd.add_argument("--username", required=True)
    commands.add_parser("generate-key", help="print a new Ed25519 signing key (PEM)")
    args = parser.parse_args(argv)
    if args.command == "create-admin":
        return create_admin(args, settings or Settings())
    if args.command == "unlock":
        return unlock(args, settings or Settings())
    sys.stdout.write(generate_pem().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
