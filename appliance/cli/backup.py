"""``appliance backup --to DIR`` and ``appliance restore FROM [--force]``."""
from __future__ import annotations


def register(subparsers, common) -> None:
    p = subparsers.add_parser("backup", parents=[common], help="copy the records and images to a folder (safe while serving)",
                              description="Write a checked copy of the records, images and keys into a new "
                                          "folder inside DIR (for example a USB stick).")
    p.add_argument("--to", dest="to_dir", required=True, metavar="DIR", help="where to put the backup folder")
    p.set_defaults(func=cmd_backup)

    p = subparsers.add_parser("restore", parents=[common], help="replace the records with a backup",
                              description="Verify a backup folder and switch the records to it. The records it "
                                          "replaces are kept aside in the data folder, not deleted.")
    p.add_argument("source", metavar="FROM", help="the backup folder (bccdms-backup-…)")
    p.add_argument("--force", action="store_true", help="replace a store that already has records")
    p.set_defaults(func=cmd_restore)


def cmd_backup(args, cfg) -> int:
    from ..store import Store
    with Store.open(cfg) as store:
        path = store.backup(args.to_dir)
    print(f"Backup written to {path}")
    return 0


def cmd_restore(args, cfg) -> int:
    from ..store import Store
    report = Store.restore(args.source, cfg, force=args.force)
    print(f"Restored {report['users']} users, {report['patients']} patients and {report['exams']} exams "
          f"from {report['restored_from']}.")
    if report["kept_aside"]:
        print(f"The records that were here are kept in {report['kept_aside']}.")
    return 0
