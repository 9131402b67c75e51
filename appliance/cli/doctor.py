"""``appliance doctor``: the self-check a technician reads out over the phone."""
from __future__ import annotations

import json


def register(subparsers, common) -> None:
    p = subparsers.add_parser("doctor", parents=[common], help="check the box; non-zero exit when something fails",
                              description="Check configuration, runtime and CPU, every model file's checksum, "
                                          "camera, free disk, clock and the data folder. Prints OK, WARN or FAIL "
                                          "per check and exits 1 when anything fails.")
    p.add_argument("--json", action="store_true", help="print the report as JSON (the same as GET /healthz)")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args, cfg) -> int:
    from ..doctor import run_checks
    report = run_checks(cfg)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.text())
    return 0 if report.ok else 1
