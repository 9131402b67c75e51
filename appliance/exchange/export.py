"""Export: the post's new records and images as one signed, encrypted bundle file.

Incremental by default: a cursor per supervisor key and kind (``store.meta``) remembers the
store's change counter at the last export that reached the stick whole; the next export takes
what changed after it. ``full=True`` takes everything. Re-exporting never duplicates anything
on the supervisor's side, because import merges by uuid.

Memory stays bounded: records stream from the store into compressed temporary files, images
are read one at a time, and the bundle is encrypted chunk by chunk as it is written.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import UserError
from . import container, csvout, deidentify, keys, layout, workdir
from .workdir import now_iso

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is 'records', 'images' or 'done'; done/total in bytes."""

RECORD_KINDS = ("patients", "exams")


@dataclass
class ExportResult:
    path: Path | None
    bundle_id: str
    kind: str
    full: bool
    seq_from: int
    seq_to: int
    counts: dict[str, int] = field(default_factory=dict)
    skipped_images: list[str] = field(default_factory=list)
    size: int = 0
    seconds: float = 0.0

    @property
    def empty(self) -> bool:
        return self.path is None


def cursor_key(recipient_raw: bytes, kind: str) -> str:
    return f"exchange.export_cursor.{keys.fingerprint(recipient_raw)}.{kind}"


def last_export(store, cfg, deidentified: bool = False) -> dict | None:
    """What the last export to the configured supervisor covered (None: never, or no key set)."""
    try:
        recipient = keys.x25519_public_raw(keys.supervisor_public_key(cfg))
    except UserError:
        return None
    kind = layout.KIND_DEIDENTIFIED if deidentified else layout.KIND_RECORDS
    return store.meta_get(cursor_key(recipient, kind))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:40] or "post"


def _json_line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"


class _Records:
    """Records and the image list of one export, gathered into temporary files."""

    def __init__(self, tmp: Path, deidentified: bool, want_csv: bool):
        self.tmp = tmp
        self.deidentified = deidentified
        self.files: dict[str, Path] = {}
        self.counts: Counter = Counter()
        self.images: dict[str, tuple[str, str, str]] = {}   # image sha256 -> (member, analysis, ext)
        self.first_at: str | None = None
        self.last_at: str | None = None
        self.packs: set[tuple[str, str]] = set()
        self.csv = csvout.ExamCsv(tmp / "exams.csv", deidentified) if want_csv else None

    def seen(self, record: dict) -> None:
        for key in ("created_at", "updated_at"):
            value = record.get(key)
            if isinstance(value, str):
                self.first_at = value if self.first_at is None or value < self.first_at else self.first_at
                self.last_at = value if self.last_at is None or value > self.last_at else self.last_at


def _gather(store, cfg, records: _Records, since: int) -> None:
    pseudonyms = deidentify.Pseudonyms(keys.pseudonym_secret(cfg)) if records.deidentified else None
    patient_of = lru_cache(maxsize=4096)(store.patients.get)
    if not records.deidentified:
        path = records.tmp / "patients.jsonl.gz"
        with gzip.open(path, "wb", compresslevel=6) as out:
            for patient in store.changes("patients", since):
                out.write(_json_line(patient))
                records.seen(patient)
                records.counts["patients"] += 1
        records.files[layout.PATIENTS] = path
    path = records.tmp / "exams.jsonl.gz"
    with gzip.open(path, "wb", compresslevel=6) as out:
        for exam in store.changes("exams", since):
            records.seen(exam)
            records.counts["exams"] += 1
            pack = (exam.get("result") or {}).get("pack") or {}
            if pack.get("id"):
                records.packs.add((str(pack.get("id")), str(pack.get("version", ""))))
            image = exam.get("image") or {}
            sha = image.get("sha256")
            member = None
            if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and exam.get("analysis"):
                ext = str(image.get("ext") or "jpg").lower()
                if sha in records.images:
                    member = records.images[sha][0]
                elif ext in layout.IMAGE_EXTENSIONS:
                    if pseudonyms:
                        # The extension may change to png when the image has to be re-encoded.
                        member = deidentify.image_member(exam["analysis"], exam.get("final_label"), sha,
                                                         pseudonyms, ext)
                    else:
                        member = layout.image_member(exam["analysis"], exam.get("final_label"), sha, ext)
                    records.images[sha] = (member, exam["analysis"], ext)
            if pseudonyms:
                row = deidentify.exam_record(exam, patient_of(exam.get("patient_uuid")), pseudonyms, member)
            else:
                row = exam
            out.write(_json_line(row))
            if records.csv:
                records.csv.add(row)
    records.files[layout.EXAMS] = path
    if not records.deidentified:
        summary: Counter = Counter()
        for entry in store.changes("audit", since):
            day = str(entry.get("at") or entry.get("created_at") or "")[:10]
            summary[(day, str(entry.get("actor", "")), str(entry.get("action", "")))] += 1
            records.counts["audit"] += 1
        path = records.tmp / "audit_summary.json"
        path.write_text(json.dumps([{"day": d, "actor": a, "action": act, "count": n}
                                    for (d, a, act), n in sorted(summary.items())], ensure_ascii=False))
        records.files[layout.AUDIT_SUMMARY] = path
    if records.csv:
        records.csv.close()
        records.files[layout.EXAMS_CSV] = records.tmp / "exams.csv"


def _installed_pack(cfg) -> dict | None:
    manifest = Path(cfg.packs_dir) / "current" / "manifest.json"
    try:
        doc = json.loads(manifest.read_text())
        return {"id": str(doc.get("pack_id", "")), "version": str(doc.get("version", ""))}
    except (OSError, ValueError, AttributeError):
        return None


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(time.time())
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> dict:
    tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


class _HashingReader:
    def __init__(self, fh):
        self._fh = fh
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.hash.update(data)
        return data


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> dict:
    """Stream a (possibly large) temporary file into the bundle, hashing it on the way."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        reader = _HashingReader(fh)
        tar.addfile(_tarinfo(name, size), reader)
    return {"sha256": reader.hash.hexdigest(), "size": size}


def export_bundle(store, cfg, to_dir: str | os.PathLike, *, full: bool = False, deidentified: bool = False,
                  csv: bool = False, progress: Progress | None = None) -> ExportResult:
    """Write one bundle into ``to_dir`` (a stick's folder); return what it holds.

    Nothing new since the last export gives a result with ``path`` None and writes nothing.
    """
    started = time.monotonic()
    to_dir = Path(to_dir)
    if not to_dir.is_dir():
        raise UserError(f"The folder {to_dir} does not exist.", "Plug in the USB stick, or give an existing folder with --to.")
    if not os.access(to_dir, os.W_OK):
        raise UserError(f"The folder {to_dir} cannot be written to.",
                        "Check that the stick is not write-protected (a small switch on some sticks).")
    recipient = keys.supervisor_public_key(cfg)
    recipient_raw = keys.x25519_public_raw(recipient)
    signing_key = keys.post_signing_key(cfg)
    kind = layout.KIND_DEIDENTIFIED if deidentified else layout.KIND_RECORDS
    report = progress or (lambda stage, done, total: None)
    with workdir.exclusive(cfg, "export", "export") as work:
        cursor = None if full else store.meta_get(cursor_key(recipient_raw, kind))
        since = int(cursor["seq"]) if cursor else 0
        seq_to = int(store.change_seq())
        bundle_id = str(uuidlib.uuid4())
        result = ExportResult(None, bundle_id, kind, full or not cursor, since, seq_to)
        tmp_root = work / "tmp"
        shutil.rmtree(tmp_root, ignore_errors=True)      # left over by an export that was killed
        tmp_root.mkdir(parents=True)
        try:
            report("records", 0, 0)
            records = _Records(tmp_root, deidentified, csv)
            _gather(store, cfg, records, since)
            result.counts = dict(records.counts, images=0)
            if not records.counts.get("exams") and not records.counts.get("patients"):
                result.seconds = time.monotonic() - started
                return result
            _write_bundle(store, cfg, to_dir, records, result, signing_key, recipient, report)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
        store.meta_set(cursor_key(recipient_raw, kind), {
            "seq": seq_to, "at": now_iso(), "bundle_id": bundle_id, "file": result.path.name,
            "full": result.full})
    result.seconds = time.monotonic() - started
    report("done", result.size, result.size)
    return result


def _image_sources(store, records: _Records) -> list[tuple[str, Path, int]]:
    sources = []
    for sha in records.images:
        path = Path(store.images.path(sha))
        try:
            sources.append((sha, path, path.stat().st_size))
        except OSError:
            sources.append((sha, path, -1))
    return sources


def _write_bundle(store, cfg, to_dir: Path, records: _Records, result: ExportResult, signing_key, recipient,
                  report: Progress) -> None:
    sources = _image_sources(store, records)
    record_bytes = sum(p.stat().st_size for p in records.files.values())
    total = record_bytes + sum(max(size, 0) for _, _, size in sources)
    need = int(total * 1.01) + (4 << 20)
    free = shutil.disk_usage(to_dir).free
    if free < need:
        raise UserError(f"The stick has {free / 1e6:.0f} MB free, and this export needs about {need / 1e6:.0f} MB.",
                        "Free some space on the stick, or use a bigger one.")
    post_id = store.post_id
    created = now_iso()
    header = {"bundle_id": result.bundle_id, "post_id": post_id, "post_name": store.post_name or cfg.post.name,
              "created": created, "kind": result.kind, "seq_from": result.seq_from, "seq_to": result.seq_to,
              "full": result.full, "software_version": __version__}
    stamp = created[:19].replace("-", "").replace(":", "")
    name = f"{_safe_name(post_id)}-{stamp}Z-{result.kind}-{result.bundle_id[:8]}{container.SUFFIX}"
    for stale in to_dir.glob(f".{_safe_name(post_id)}-*{container.SUFFIX}{container.PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)                 # a half bundle from an export that was cut off
    writer = container.BundleWriter(to_dir, name, header, signing_key, recipient)
    done = 0
    try:
        members: dict[str, dict] = {}
        with tarfile.open(fileobj=writer, mode="w|", bufsize=container.CHUNK,
                          copybufsize=container.CHUNK, format=tarfile.PAX_FORMAT) as tar:
            report("records", 0, total)
            for member, path in records.files.items():
                if member == layout.EXAMS_CSV:
                    continue
                members[member] = _add_file(tar, member, path)
                done += path.stat().st_size
                report("records", done, total)
            for sha, path, size in sources:
                member, analysis, ext = records.images[sha]
                data = _image_bytes(path, sha, ext, records.deidentified)
                if data is None:
                    result.skipped_images.append(sha)
                else:
                    members[member] = _add_bytes(tar, member, data)
                done += max(size, 0)
                report("images", done, total)
            if layout.EXAMS_CSV in records.files:
                members[layout.EXAMS_CSV] = _add_file(tar, layout.EXAMS_CSV, records.files[layout.EXAMS_CSV])
            result.counts["images"] = sum(1 for m in members if m.startswith("images/"))
            manifest = {
                "format": layout.MANIFEST_FORMAT, **header,
                "range": {"seq_from": result.seq_from, "seq_to": result.seq_to, "full": result.full,
                          "first_record_at": records.first_at, "last_record_at": records.last_at},
                "software": {"name": "bccdms", "version": __version__},
                "model_packs": {"installed": _installed_pack(cfg),
                                "used": [{"id": i, "version": v} for i, v in sorted(records.packs)]},
                "counts": result.counts,
                "skipped_images": result.skipped_images,
                "members": members,
            }
            _add_bytes(tar, layout.MANIFEST, json.dumps(manifest, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        result.path = writer.commit()
        result.size = result.path.stat().st_size
    except OSError as exc:
        writer.abort()
        raise UserError(f"The bundle could not be written to {to_dir} ({exc.strerror or exc}).",
                        "Check that the stick is still plugged in and has free space, then export again.") from None
    except BaseException:
        writer.abort()
        raise


def _image_bytes(path: Path, sha: str, ext: str, deidentified: bool) -> bytes | None:
    """The image's bytes as they go into the bundle, or None when it is missing or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha:
        return None          # bit rot in the library: never pass damaged data on as if it were whole
    if not deidentified:
        return data
    try:
        return deidentify.strip_metadata(data, ext)
    except Exception:        # Pillow raises many kinds for undecodable files; such an image is skipped
        return None
