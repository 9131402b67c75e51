"""``appliance backup --to DIR [--with-keys]`` and ``appliance restore FROM [--force] [--without-keys]``.

The keys (post signing key, pseudonym secret, supervisor key) are left out of a backup unless
``--with-keys``; then they are sealed with a passphrase (asked twice on a terminal, else read
from the first line of standard input) and ``restore`` asks for it.
"""
from __future__ import annotations

from .prompt import read_secret


def register(subparsers, common) -> None:
    p = subparsers.add_parser("backup", parents=[common], help="copy the records and images to a folder (safe while serving)",
                              description="Write a checked copy of the records and images into a new folder inside "
                                          "DIR (for example a USB stick). The keys are left out unless --with-keys.")
    p.add_argument("--to", dest="to_dir", required=True, metavar="DIR", help="where to put the backup folder")
    p.add_argument("--with-keys", action="store_true",
                   help="also back up the box's keys, encrypted with a passphrase (asked twice, or read from stdin)")
    p.set_defaults(func=cmd_backup)

    p = subparsers.add_parser("restore", parents=[common], help="replace the records with a backup",
                              description="Verify a backup folder and switch the records to it. The records it "
                                          "replaces are kept aside in the data folder, not deleted. A backup made "
                                          "--with-keys asks for its passphrase.")
    p.add_argument("source", metavar="FROM", help="the backup folder (bccdms-backup-…)")
    p.add_argument("--force", action="store_true", help="replace a store that already has records")
    p.add_argument("--without-keys", action="store_true", help="restore the records only; keep this box's keys")
    p.set_defaults(func=cmd_restore)


def cmd_backup(args, cfg) -> int:
    from ..store import Store
    from ..store.sealed_keys import check_passphrase
    passphrase = None
    if args.with_keys:
        passphrase = check_passphrase(read_secret("passphrase", confirm=True,
                                                  example="appliance backup --with-keys --to DIR"))
    with Store.open(cfg) as store:
        path = store.backup(args.to_dir, passphrase=passphrase)
    print(f"Backup written to {path}")
    if passphrase is None:
        print("The keys are not in it (give --with-keys to include them, encrypted).")
    else:
        print("The keys are in it, encrypted: keep the passphrase apart from the stick.")
    return 0


def cmd_restore(args, cfg) -> int:
    from ..store import Store

    def ask() -> str:
        return read_secret("passphrase", confirm=False, example="appliance restore FROM")

    report = Store.restore(args.source, cfg, force=args.force, passphrase=ask, without_keys=args.without_keys)
    print(f"Restored {report['users']} users, {report['patients']} patients and {report['exams']} exams "
          f"from {report['restored_from']}.")
    print({"restored": "The keys were restored from the backup.",
           "left out": "The keys in the backup were left out; this box keeps its own.",
           "not in the backup": "The backup holds no keys; this box keeps its own."}[report["keys"]])
    if report["kept_aside"]:
        print(f"The records that were here are kept in {report['kept_aside']}.")
    return 0
