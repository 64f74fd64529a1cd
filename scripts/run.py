"""`make run`: the whole system on embedded defaults (SQLite + in-process cache unless DATABASE_URL/REDIS_URL
are set), API at http://127.0.0.1:8080. Ctrl-C stops everything."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from scripts.stack import ROOT, Stack, default_ports


async def admin_exists() -> bool:
    from services.auth import repository
    from services.auth.config import Settings
    from shared.db import Database

    db = Database(Settings())
    try:
        async with db.read() as conn:
            return await repository.any_admin(conn)
    finally:
        await db.dispose()


def _interrupt(*_args) -> None:
    raise KeyboardInterrupt


def main() -> int:
    os.chdir(ROOT)
    stack = Stack(ports=default_ports())
    storage = os.environ.get("DATABASE_URL", "SQLite files under ./var/")
    cache = "Redis" if os.environ.get("REDIS_URL") else "in-process cache"
    print(f"bagtrack: migrating databases ({storage.split('@')[-1]}; {cache})", flush=True)
    # Explicit handlers: a shell that starts us in the background may have set SIGINT to "ignore".
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.migrate()
        stack.start()
        stack.wait_ready(timeout=60)
        api = stack.url()
        print(f"\nbagtrack is up: {api}  (logs in var/log/*.log; Ctrl-C stops it)")
        print(f"gateway /ready and /metrics: {stack.ops_url()} (not on {api})\n")
        username = os.environ.get("BAGTRACK_ADMIN_USERNAME")
        if username and os.environ.get("BAGTRACK_ADMIN_PASSWORD"):
            print("log in as the admin from BAGTRACK_ADMIN_USERNAME/PASSWORD:")
            print(f"  curl -s {api}/api/v1/auth/login -H 'content-type: application/json' \\\n"
                  f"       -d \"{{\\\"username\\\": \\\"{username}\\\", \\\"password\\\": \\\"$BAGTRACK_ADMIN_PASSWORD\\\"}}\"")
        elif not asyncio.run(admin_exists()):
            print("no admin exists yet. Create one (it asks for the password), then log in:")
            print("  make create-admin ADMIN=admin")
            print("or restart with BAGTRACK_ADMIN_USERNAME and BAGTRACK_ADMIN_PASSWORD set.")
        else:
            print(f"log in: curl -s {api}/api/v1/auth/login -H 'content-type: application/json' "
                  "-d '{\"username\": \"...\", \"password\": \"...\"}'")
        print(f"then call e.g. {api}/api/v1/auth/me with 'Authorization: Bearer <access_token>'", flush=True)
        while not stack.dead():
            time.sleep(0.5)
        print(f"bagtrack: {', '.join(stack.dead())} stopped unexpectedly; shutting down (see var/log/)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbagtrack: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"bagtrack: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
