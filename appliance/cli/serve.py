"""``appliance serve [--host H] [--port P]``: run the kiosk server."""
from __future__ import annotations

import argparse
import logging


def register(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("serve", parents=[common], help="run the kiosk web server",
                              description="Serve the touchscreen kiosk (waitress). GET /healthz answers JSON.")
    p.add_argument("--host", help="listen address (default: [server] host, 127.0.0.1)")
    p.add_argument("--port", type=int,
                   help="listen port (default: [server] port, 8080; 0: any free port, named in the log line)")
    p.set_defaults(func=run)


def run(args, cfg) -> int:
    from ..errors import UserError
    from ..web.server import serve
    # Port 0: the system picks a free port; the log line and systemd's STATUS name it.
    if args.port is not None and not 0 <= args.port < 65536:
        raise UserError(f"The port {args.port} is out of range.",
                        "Use a port from 1 to 65535 (or 0 for any free port).")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(cfg, host=args.host, port=args.port)
    return 0
