"""The ``bccdms-export`` console script: train, export, quantize, evaluate, pack, keygen, demo.

Each sub-command is registered from ``export.commands``; heavy libraries (torch, ONNX
Runtime's quantizer, OpenVINO, NNCF) are imported when a command runs, so ``--help`` is
instant. Errors the user can fix are one sentence and the next step on stderr, never a
traceback (the same reporting as the ``appliance`` script).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from appliance.cli import run_reporting_errors

PROG = "bccdms-export"


def build_parser() -> argparse.ArgumentParser:
    from . import commands
    parser = argparse.ArgumentParser(
        prog=PROG, description="BCCDMS model pipeline: train ResNet152 models, export them to ONNX, "
                               "quantize to INT8 for ONNX Runtime and OpenVINO, evaluate, and build "
                               "signed model packs for the appliance.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in commands.REGISTER:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _block_telemetry()
    args = build_parser().parse_args(argv)
    # The exact command, for the records that cite it (model cards).
    args.command_line = shlex.join([PROG, *(sys.argv[1:] if argv is None else argv)])
    return run_reporting_errors(PROG, lambda: int(args.func(args) or 0), "the ML team")


def _block_telemetry() -> None:
    """No telemetry, ever: NNCF and the OpenVINO converter send usage data unless a consent file
    says no. The appliance's block runs before anything can import them (it costs OpenVINO's
    import time, ~0.4 s, even for --help)."""
    try:
        from appliance.inference.runtimes.openvino import block_telemetry
    except ImportError:
        return        # no OpenVINO here: the module blocked the telemetry before importing it
    block_telemetry()


if __name__ == "__main__":
    sys.exit(main())
