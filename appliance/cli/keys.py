"""``appliance keys show | supervisor-init``: the keys of USB exchange.

``show`` (on a post) prints what the supervisor pastes into ``[exchange.known_posts]``.
``supervisor-init`` (on the supervisor's box, once) creates the key pair bundles are encrypted
to, and prints the public key each post sets as ``[exchange] supervisor_public_key``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("keys", parents=[common], help="show this post's key; create the supervisor's keys",
                              description="Keys for USB bundles: each post signs them, the supervisor opens them.")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    show = sub.add_parser("show", parents=[common], help="print the post id, name and public signing key")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=run_show)
    init = sub.add_parser("supervisor-init", parents=[common],
                          help="create the supervisor's key pair and print its public key")
    init.add_argument("--out", help="where to write the private key (default: [exchange] supervisor_private_key, "
                                    "else <data dir>/keys/supervisor_exchange.key)")
    init.add_argument("--force", action="store_true", help="replace an existing key (old bundles become unreadable)")
    init.set_defaults(func=run_supervisor_init)


def run_show(args, cfg) -> int:
    from .. import signing
    from ..exchange import keys
    from ..store import Store
    store = Store.open(cfg)
    try:
        post_id, post_name = store.post_id, store.post_name
    finally:
        store.close()
    public = signing.public_b64(keys.post_signing_key(cfg))
    info = {"post_id": post_id, "post_name": post_name, "signing_key": public,
            "fingerprint": keys.fingerprint(signing.unb64(public, "key"))}
    supervisor_file = keys.supervisor_key_path(cfg)
    if supervisor_file.exists():
        info["supervisor_public_key"] = signing.b64(keys.x25519_public_raw(keys.load_supervisor_key(cfg)))
    if cfg.exchange.supervisor_public_key:
        info["exports_encrypted_to"] = keys.fingerprint(keys.x25519_public_raw(keys.supervisor_public_key(cfg)))
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"Post id:      {post_id}")
    print(f"Post name:    {post_name}")
    print(f"Signing key:  {public}")
    print(f"Fingerprint:  {info['fingerprint']}")
    if "exports_encrypted_to" in info:
        print(f"Exports are encrypted to the supervisor key {info['exports_encrypted_to']}.")
    else:
        print("No supervisor key is set: set [exchange] supervisor_public_key before exporting.")
    if "supervisor_public_key" in info:
        print(f"This box's own supervisor public key: {info['supervisor_public_key']}")
    print()
    print("On the supervisor's box, add this post to the configuration file:")
    print("[exchange.known_posts]")
    print(f'"{post_id}" = "{public}"')
    return 0


def run_supervisor_init(args, cfg) -> int:
    from .. import signing
    from ..exchange import keys
    path = Path(args.out) if args.out else keys.supervisor_key_path(cfg)
    key = keys.create_supervisor_key(path, overwrite=args.force)
    public = signing.b64(keys.x25519_public_raw(key))
    print(f"The supervisor's private key is in {path} (readable by this user only).")
    print("Keep a copy of it in a safe place: bundles made for this key cannot be opened without it.")
    if args.out:
        print(f"Set [exchange] supervisor_private_key = \"{path}\" on the box that imports bundles.")
    print()
    print(f"Fingerprint: {keys.fingerprint(keys.x25519_public_raw(key))}")
    print("On every health post, set in the configuration file:")
    print("[exchange]")
    print(f'supervisor_public_key = "{public}"')
    return 0
