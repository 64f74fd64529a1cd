"""`python -m gateway --host H --port P [--ops-host H --ops-port P]`: the gateway, see gateway/server.py."""
from __future__ import annotations

import argparse

from gateway.config import GatewaySettings
from gateway.server import serve
from shared.topology import GATEWAY_PORT


def main() -> None:
    settings = GatewaySettings()
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="public address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT, help=f"public port (default {GATEWAY_PORT})")
    parser.add_argument("--ops-host", default=settings.ops_host,
                        help="address of /ready and /metrics (default GATEWAY_OPS_HOST or %(default)s)")
    parser.add_argument("--ops-port", type=int, default=settings.ops_port,
                        help="port of /ready and /metrics, never published (default GATEWAY_OPS_PORT or %(default)s)")
    args = parser.parse_args()
    if args.ops_port == args.port and args.port != 0:
        parser.error("--ops-port must differ from --port")
    serve(args.host, args.port, settings.model_copy(update={"ops_host": args.ops_host, "ops_port": args.ops_port}))


if __name__ == "__main__":
    main()
