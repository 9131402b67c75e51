"""``appliance models list [--quiet] | install PATH | rollback``: the installed model packs."""
from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path


def register(subparsers, common) -> None:
    models = subparsers.add_parser("models", parents=[common], help="list, install or roll back model packs",
                                   description="Model packs: signed folders of models from the ML team.")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    p = sub.add_parser("list", parents=[common], help="show the installed packs (exit 1 when none is installed)")
    p.add_argument("--quiet", action="store_true", help="print nothing; only the exit status says whether a pack is installed")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("install", parents=[common], help="verify a pack (signature, checksums) and make it current",
                       description="Verify a pack and make it current. A pack compared with the one in use shows the "
                                   "comparison first; a pack the ML team's check did not recommend needs "
                                   "--confirm-not-recommended (or a 'yes' typed at the question).")
    p.add_argument("path", metavar="PATH", help="the pack folder (the one holding manifest.json), e.g. on a USB stick")
    p.add_argument("--confirm-not-recommended", action="store_true",
                   help="install a pack the ML team's check did not recommend (only when the ML team says so)")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("rollback", parents=[common], help="go back to the previous pack")
    p.set_defaults(func=cmd_rollback)


def _describe(info) -> str:
    kind = "DEMO (untrained, not for clinical use)" if info.demo else ("trusted" if info.trusted else "untrusted")
    head = f"{info.role:<9} {info.pack_id}"
    if info.problem:
        return f"{head}  UNUSABLE: {info.problem}\n          {info.path}"
    models = ", ".join(f"{m} {v}" for m, v in info.models)
    compared = "".join(f"\n          {line}" for line in info.comparison_lines())
    return (f"{head}  version {info.version or '?'}  {kind}  {len(info.models)} models, "
            f"{info.size_bytes / 1e6:.0f} MB\n          {models}{compared}\n          {info.path}")


def cmd_list(args, cfg) -> int:
    from ..models_admin import PackManager
    manager = PackManager(cfg)
    installed = manager.is_installed()
    if args.quiet:
        return 0 if installed else 1
    packs = manager.list()
    if args.json:
        print(json.dumps({"installed": installed, "clinical": cfg.clinical,
                          "packs": [p.to_json() for p in packs]}, indent=2))
        return 0 if installed else 1
    if not packs:
        print("No model pack is installed, and there is no built-in demo pack.")
    for info in packs:
        print(_describe(info))
    if not installed:
        if cfg.clinical:
            fallback = "this box is in clinical mode, so no analysis is available"
        elif any(p.role == "built-in" and not p.problem for p in packs):
            fallback = "the built-in demo pack is used"
        else:
            fallback = "no analysis is available"
        print(f"No model pack is installed: {fallback}. Install one with 'appliance models install PATH'.")
    return 0 if installed else 1


def _tell_running_server() -> None:
    from ..models_admin import signal_running_server
    if signal_running_server():
        print("The running appliance was asked to load it now.")
    else:
        print("If the appliance is running, restart it to use it (sudo systemctl restart bccdms).")


def _audit(cfg, action: str, info, **detail) -> None:
    """Model changes go into the audit log beside the kiosk's, with who typed the command."""
    from ..errors import UserError
    from ..store import Store
    actor = "cli:" + (os.environ.get("SUDO_USER") or getpass.getuser())
    try:
        store = Store.open(cfg)
    except UserError as exc:
        print(f"Note: not written to the audit log ({exc.message}).")
        return
    try:
        store.audit.log(actor, action, "model_pack", info.pack_id,
                        {"version": info.version, "demo": info.demo, **detail})
    finally:
        store.close()


def _confirmed(info, flag: bool) -> bool:
    """Show the comparison; for a pack not recommended, the flag or a typed 'yes' confirms it."""
    for line in info.comparison_lines():
        print(line)
    if not info.needs_confirmation or flag:
        return flag
    if not sys.stdin.isatty():
        return False                         # PackManager refuses it with the sentence and the next step
    answer = input("Install this pack anyway? Type yes to install it, anything else to stop: ")
    return answer.strip().lower() == "yes"


def cmd_install(args, cfg) -> int:
    from ..models_admin import PackManager
    manager = PackManager(cfg)
    print(f"Checking the model pack at {args.path} (signature and every file's checksum)...", flush=True)
    source = Path(args.path)
    incoming = manager.describe(source.parent if source.name == "manifest.json" else source, "usb") \
        if source.exists() else None
    confirmed = _confirmed(incoming, args.confirm_not_recommended) if incoming and not incoming.problem else False
    info = manager.install(args.path, confirmed_not_recommended=confirmed)
    _audit(cfg, "models.install", info, confirmed_not_recommended=info.needs_confirmation)
    print(f"Installed and switched to model pack {info.pack_id} {info.version} "
          f"({len(info.models)} models{', DEMO' if info.demo else ''}).")
    _tell_running_server()
    return 0


def cmd_rollback(args, cfg) -> int:
    from ..models_admin import PackManager
    info = PackManager(cfg).rollback()
    _audit(cfg, "models.rollback", info)
    print(f"Rolled back: model pack {info.pack_id} {info.version} is current again.")
    _tell_running_server()
    return 0
