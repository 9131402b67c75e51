"""The ``appliance`` console script.

Each command group lives in its own module under ``appliance.cli`` and exposes
``register(subparsers, common)``, which adds its sub-commands and sets ``func(args, cfg)``
on them. Command modules import heavy libraries (runtimes, cameras) inside their
functions, so ``appliance --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from ..config import load_config
from ..errors import UserError

# Order is the order of ``appliance --help``.
COMMAND_MODULES = (
    "serve",
    "diagnose",
    "models",
    "doctor",
    "exchange",
    "keys",
    "users",
    "stats",
    "backup",
)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=argparse.SUPPRESS,
                        help="data folder (default: BCCDMS_DATA_DIR, else ./data in a checkout, else /var/lib/bccdms)")
    common.add_argument("--config", default=argparse.SUPPRESS,
                        help="configuration file (default: BCCDMS_CONFIG, else /etc/bccdms/config.toml)")
    parser = argparse.ArgumentParser(prog="appliance", parents=[common],
                                     description="BCCDMS: offline breast and cervical cancer diagnosis support.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def run() -> int:
        cfg = load_config(getattr(args, "config", None), getattr(args, "data_dir", None))
        return int(args.func(args, cfg) or 0)
    return run_reporting_errors("appliance", run, "the technician")


def run_reporting_errors(prog: str, run, send_to: str) -> int:
    """Run a command; user errors become one sentence and a hint on stderr, never a traceback.

    Shared by the ``appliance`` and ``bccdms-export`` console scripts.
    """
    try:
        return run()
    except UserError as exc:
        print(f"{prog}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not the user's doing: one sentence, details on request
        if os.environ.get("BCCDMS_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: an unexpected error happened ({type(exc).__name__}: {exc}).", file=sys.stderr)
        print(f"Run the command again with BCCDMS_DEBUG=1 and send the output to {send_to}.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
