"""The sub-commands of ``bccdms-export`` (argument parsing and wiring; the work is elsewhere)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.errors import UserError


# ---------------------------------------------------------------- keygen

def _keygen(args) -> int:
    from appliance import signing
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; a signing key is never overwritten by accident.",
                        "Choose another --out file, or pass --force to replace the key.")
    key = signing.new_private_key()
    signing.write_private_key(key, out)
    print(signing.public_b64(key))
    print(f"Private key written to {out} (readable by you only): keep it off the boxes and back it up.\n"
          "The line above is its public key: add it to the box's [security] trusted_model_keys.",
          file=sys.stderr)
    return 0


def register_keygen(sub) -> None:
    p = sub.add_parser("keygen", help="create the Ed25519 key that signs model packs",
                       description="Create an Ed25519 signing key for model packs. Prints the public key "
                                   "to put in the box's [security] trusted_model_keys.")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the private key")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=_keygen)


# ---------------------------------------------------------------- demo

def _demo(args) -> int:
    from .demo import build_demo_pack
    key = _read_key(args.key) if args.key else None
    build_demo_pack(Path(args.out), arch=args.arch, private_key=key, demo=True, progress=not args.quiet,
                    image_size=args.image_size, include_fp32=args.fp32 or None, seed=args.seed,
                    overwrite=args.force)
    return 0


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="build the demo pack (untrained models, all seven) for a fresh box",
                       description="Build a signed demo pack for all seven models: untrained networks with "
                                   "BatchNorm statistics set on synthetic textures, INT8 for ONNX Runtime and "
                                   "OpenVINO. Every result the appliance produces with it says DEMO.")
    p.add_argument("--out", default="weights/demo", metavar="DIR", help="pack folder (default: weights/demo)")
    p.add_argument("--arch", choices=("resnet152", "tiny"), default="resnet152",
                   help="resnet152 (default; a few minutes) or tiny (seconds; for tests)")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default 224, tiny 64)")
    p.add_argument("--fp32", action="store_true", help="also write FP32 ONNX and IR (large)")
    p.add_argument("--key", metavar="FILE", help="sign with this key (default: a throw-away key)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace the --out folder if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_demo)


# ---------------------------------------------------------------- helpers

def _read_key(path: str):
    from appliance import signing
    return signing.read_private_key(Path(path))


REGISTER = (register_demo, register_keygen)
