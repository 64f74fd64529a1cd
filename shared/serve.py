"""`python -m shared.serve services.<name>.app:create_app --host H --port P`: one service process.

The same uvicorn settings the services always had (uvloop, httptools, no access log, no proxy headers:
shared/proxies.py is the one rule for client addresses, graceful shutdown 5 s, keep-alive 75 s above every
client's idle timeout), on `shared.drain.DrainingServer`, so SIGTERM first drains (readiness 503, streams told to
reconnect) and then waits for requests in flight.
"""
from __future__ import annotations

import argparse

import uvicorn

from shared.drain import DrainingServer

TIMEOUT_GRACEFUL_SHUTDOWN = 5
TIMEOUT_KEEP_ALIVE = 75


def config(app: str, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, factory=True, host=host, port=port, loop="uvloop", http="httptools",
                          access_log=False, proxy_headers=False, timeout_graceful_shutdown=TIMEOUT_GRACEFUL_SHUTDOWN,
                          timeout_keep_alive=TIMEOUT_KEEP_ALIVE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.serve", description=__doc__)
    parser.add_argument("app", help="an app factory, e.g. services.scanning.app:create_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    DrainingServer(config(args.app, args.host, args.port)).run()


if __name__ == "__main__":
    main()
