"""``appliance export --to DIR`` and ``appliance import BUNDLE...``: USB bundles."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(subparsers, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("export", parents=[common], help="write a USB bundle for the supervisor",
                              description="Write the records and images that are new since the last export "
                                          "into one encrypted, signed bundle file.")
    p.add_argument("--to", required=True, metavar="DIR", help="folder to write the bundle into (the USB stick)")
    p.add_argument("--full", action="store_true", help="export everything, not only what is new")
    p.add_argument("--deidentified", action="store_true",
                   help="research export: no names, phones, addresses or dates of birth; pseudonymous ids")
    p.add_argument("--csv", action="store_true", help="add a CSV of the exams for spreadsheets")
    p.set_defaults(func=run_export)

    p = subparsers.add_parser("import", parents=[common], help="verify, decrypt and merge USB bundles",
                              description="Check and merge bundles from health posts (supervisor's box). "
                                          "A bundle that fails any check changes nothing.")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="bundle files, or folders (a stick) holding them")
    p.add_argument("--accept-unknown", action="store_true",
                   help="import bundles from posts not listed in [exchange] known_posts")
    p.add_argument("--extract-to", metavar="DIR",
                   help="unpack verified bundles into DIR instead of merging (de-identified research exports)")
    p.add_argument("--json", action="store_true", help="print one JSON object per bundle")
    p.set_defaults(func=run_import)


class ProgressBar:
    """A one-line progress bar on stderr (a line every 10 % when stderr is not a terminal)."""

    def __init__(self, label: str, stream=sys.stderr):
        self.label = label
        self.stream = stream
        self.tty = stream.isatty()
        self._last_step = -1
        self._last_draw = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            return
        fraction = min(1.0, done / total)
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.1 and fraction < 1.0:
                return
            self._last_draw = now
            width = 30
            filled = int(fraction * width)
            self.stream.write(f"\r{self.label}: [{'#' * filled}{'.' * (width - filled)}] "
                              f"{fraction * 100:5.1f}% {stage:<8}")
            self.stream.flush()
        else:
            step = int(fraction * 10)
            if step != self._last_step:
                self._last_step = step
                self.stream.write(f"{self.label}: {step * 10}% ({stage})\n")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_export(args, cfg) -> int:
    from ..exchange.export import export_bundle
    from ..store import Store
    store = Store.open(cfg)
    bar = ProgressBar("Exporting")
    try:
        result = export_bundle(store, cfg, Path(args.to), full=args.full, deidentified=args.deidentified,
                               csv=args.csv, progress=bar)
    finally:
        bar.finish()
        store.close()
    if result.empty:
        print("Nothing is new since the last export; no bundle was written. "
              "Use --full to export everything again.")
        return 0
    counts = result.counts
    print(f"Wrote {result.path} ({result.size / 1e6:.1f} MB in {result.seconds:.1f} s): "
          f"{counts.get('patients', 0)} patients, {counts.get('exams', 0)} exams, {counts.get('images', 0)} images"
          + (", de-identified" if args.deidentified else "") + ".")
    if result.skipped_images:
        print(f"Warning: {len(result.skipped_images)} images were missing or damaged on this box and were left out.",
              file=sys.stderr)
    return 0


def _expand_bundle_args(paths: list[str]) -> list[Path]:
    from ..errors import UserError
    from ..exchange.usb import bundles_on
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            inside = bundles_on(path)
            if not inside:
                raise UserError(f"There is no bundle (.bccdms file) in {path}.",
                                "Give the bundle files, or the folder of the stick that holds them.")
            found += inside
        elif path.exists():
            found.append(path)
        else:
            raise UserError(f"The bundle {path} does not exist.", "Check the path.")
    return found


def run_import(args, cfg) -> int:
    from ..exchange import importer
    from ..exchange.container import BundleRefused
    bundles = _expand_bundle_args(args.bundles)
    bar = ProgressBar("Importing")
    if args.extract_to:
        results = []
        for path in bundles:
            try:
                results.append(importer.extract_bundle(cfg, path, Path(args.extract_to),
                                                       accept_unknown=args.accept_unknown, progress=bar))
            except BundleRefused as exc:
                results.append(exc)
        bar.finish()
    else:
        from ..store import Store
        store = Store.open(cfg)
        try:
            results = importer.import_bundles(store, cfg, bundles, accept_unknown=args.accept_unknown,
                                              by="cli", progress=bar)
        finally:
            bar.finish()
            store.close()
    refused = 0
    for item in results:
        if isinstance(item, BundleRefused):
            refused += 1
            if args.json:
                print(json.dumps({"refused": item.message, "hint": item.hint}, ensure_ascii=False))
            else:
                print(f"appliance: {item.message}", file=sys.stderr)
                if item.hint:
                    print(item.hint, file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(item.to_json(), ensure_ascii=False))
            continue
        print(_describe(item))
        for warning in item.warnings:
            print(f"Warning: {warning}", file=sys.stderr)
    return 2 if refused else 0


def _describe(report) -> str:
    who = f"post {report.post_id}" + (f" ({report.post_name})" if report.post_name else "")
    if report.extracted_to:
        return f"{report.path.name}: from {who}, verified and unpacked into {report.extracted_to}."
    if report.already_imported and not report.changed:
        return f"{report.path.name}: from {who}, already imported; nothing changed."
    parts = []
    for kind, counts in report.merged.items():
        parts.append(f"{kind}: {counts['inserted']} new, {counts['updated']} updated, "
                     f"{counts['unchanged']} unchanged")
    return (f"{report.path.name}: from {who}, imported in {report.seconds:.1f} s — " + "; ".join(parts)
            + f"; images: {report.images_added} new, {report.images_present} already here.")
