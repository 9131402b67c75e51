"""Export: the post's new records and images as one signed, encrypted bundle file.

Incremental by default: a cursor per supervisor key and kind (``store.meta``) remembers the
store's change counter at the last export that reached the stick whole; the next export takes
what changed after it. ``full=True`` takes everything. Re-exporting never duplicates anything
on the supervisor's side, because import merges by uuid.

Two things happen at once: a thread reads the changed records from the store into compressed
temporary files and names each new image as it meets it, while the caller's thread streams
those images into the bundle (read, hash, tar, encrypt, write). Reading records is Python
work and streaming images is mostly I/O, hashing and AES in C, so the two overlap and an
export takes about as long as the longer of the two instead of their sum. Memory stays
bounded: one record, one image and one 1 MiB chunk at a time.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import queue
import re
import shutil
import tarfile
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .. import __version__, clock
from ..errors import UserError
from ..fsutil import is_sha256
from ..store.exams import decision_of, research_label
from . import container, csvout, deidentify, keys, layout, workdir
from .workdir import now_iso

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is 'records', 'images' or 'done'; done/total in bytes."""

_COPY = 1 << 20


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


# -- reading the records (in a thread) ---------------------------------------------------------

class _Gatherer(threading.Thread):
    """Reads the changed records into temporary files; hands each new image to ``images``."""

    DONE = None

    def __init__(self, store, cfg, since: int, tmp: Path, deidentified: bool, want_csv: bool):
        super().__init__(name="export-records", daemon=True)
        self.store, self.cfg, self.since, self.tmp = store, cfg, since, tmp
        self.deidentified = deidentified
        self.want_csv = want_csv
        self.images: queue.Queue = queue.Queue()        # (sha256, member, ext), then DONE
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.files: dict[str, Path] = {}
        self.counts: Counter = Counter()
        self.first_at: str | None = None
        self.last_at: str | None = None
        self.packs: set[tuple[str, str]] = set()
        self._members: set[str] = set()                  # image members queued already
        self._identified: dict[str, str] = {}            # identified bundles: one member per image sha256

    def run(self) -> None:
        try:
            self._exams()
            self._pathway()
            if not self.deidentified:
                self._patients()
                self._audit_summary()
        except BaseException as exc:   # handed to the caller's thread, which raises it
            self.error = exc
        finally:
            self.images.put(self.DONE)

    def _seen(self, record: dict) -> None:
        for key in ("created_at", "updated_at"):
            value = record.get(key)
            if isinstance(value, str):
                self.first_at = value if self.first_at is None or value < self.first_at else self.first_at
                self.last_at = value if self.last_at is None or value > self.last_at else self.last_at

    def _image_member(self, exam: dict, pseudonyms) -> tuple[str | None, bool]:
        """The bundle member of an exam's image, and whether the image goes under ``unconfirmed/``
        with the exam's record beside it (research bundles). Class folders hold only the class a
        clinician decided on an exam made with trained models (``research_label``)."""
        image = exam.get("image") or {}
        sha, ext = image.get("sha256"), str(image.get("ext") or "jpg").lower()
        analysis = exam.get("analysis")
        if not is_sha256(sha) or ext not in layout.IMAGE_EXTENSIONS or not analysis:
            return None, False
        confirmed = research_label(analysis, exam.get("final_label"), decision_of(exam), bool(exam.get("demo")))
        if not pseudonyms:
            # The supervisor's store files images by the records; the folder only helps a person looking.
            if sha in self._identified:
                return self._identified[sha], False
            member = self._identified[sha] = layout.image_member(analysis, confirmed or layout.UNCONFIRMED, sha, ext)
            return member, False
        if confirmed:
            return deidentify.image_member(analysis, confirmed, sha, pseudonyms, ext), False
        return deidentify.unconfirmed_member(analysis, str(exam.get("uuid")), pseudonyms, ext), True

    def _queue_image(self, exam: dict, member: str, record_beside: bytes | None) -> None:
        """Hand an image to the reader once per member (with the record to write beside it)."""
        if member in self._members:
            return
        self._members.add(member)
        image = exam["image"]
        self.images.put((image["sha256"], member, str(image.get("ext") or "jpg").lower(), record_beside))

    def _exams(self) -> None:
        pseudonyms = deidentify.Pseudonyms(keys.pseudonym_secret(self.cfg)) if self.deidentified else None
        patient_of = lru_cache(maxsize=4096)(self.store.patients.get)
        table = csvout.ExamCsv(self.tmp / "exams.csv", self.deidentified) if self.want_csv else None
        path = self.tmp / "exams.jsonl.gz"
        with gzip.open(path, "wb", compresslevel=6) as out:
            for exam in self.store.changes("exams", self.since):
                if self.stop.is_set():
                    return
                self._seen(exam)
                self.counts["exams"] += 1
                pack = (exam.get("result") or {}).get("pack") or {}
                if pack.get("id"):
                    self.packs.add((str(pack.get("id")), str(pack.get("version", ""))))
                member, unconfirmed = self._image_member(exam, pseudonyms)
                row = exam if not pseudonyms else deidentify.exam_record(
                    exam, patient_of(exam.get("patient_uuid")), pseudonyms, member)
                if member:
                    self._queue_image(exam, member, _json_line(row) if unconfirmed else None)
                out.write(_json_line(row))
                if table:
                    table.add(row)
        self.files[layout.EXAMS] = path
        if table:
            table.close()
            self.files[layout.EXAMS_CSV] = self.tmp / "exams.csv"

    def _pathway(self) -> None:
        """Visits, referrals and follow-ups: as they are, or (research bundles) whitelisted."""
        pseudonyms = deidentify.Pseudonyms(keys.pseudonym_secret(self.cfg)) if self.deidentified else None
        patient_of = lru_cache(maxsize=4096)(self.store.patients.get)
        for member, kind in layout.PATHWAY_MEMBERS.items():
            path = self.tmp / f"{kind}.jsonl.gz"
            with gzip.open(path, "wb", compresslevel=6) as out:
                for record in self.store.changes(kind, self.since):
                    if self.stop.is_set():
                        return
                    self._seen(record)
                    self.counts[kind] += 1
                    row = record if not pseudonyms else deidentify.PATHWAY_RECORDS[kind](
                        record, patient_of(record.get("patient_uuid")), pseudonyms)
                    out.write(_json_line(row))
            if self.counts[kind]:
                self.files[member] = path

    def _patients(self) -> None:
        path = self.tmp / "patients.jsonl.gz"
        with gzip.open(path, "wb", compresslevel=6) as out:
            for patient in self.store.changes("patients", self.since):
                if self.stop.is_set():
                    return
                out.write(_json_line(patient))
                self._seen(patient)
                self.counts["patients"] += 1
        self.files[layout.PATIENTS] = path

    def _audit_summary(self) -> None:
        summary: Counter = Counter()
        for entry in self.store.changes("audit", self.since):
            day = str(entry.get("at") or entry.get("created_at") or "")[:10]
            summary[(day, str(entry.get("actor", "")), str(entry.get("action", "")))] += 1
            self.counts["audit"] += 1
        path = self.tmp / "audit_summary.json"
        path.write_text(json.dumps([{"day": d, "actor": a, "action": act, "count": n}
                                    for (d, a, act), n in sorted(summary.items())], ensure_ascii=False))
        self.files[layout.AUDIT_SUMMARY] = path


# -- writing the bundle ------------------------------------------------------------------------

class _TarStream:
    """A tar stream written straight into the bundle (headers from ``tarfile.TarInfo``).

    Writing members directly, instead of through ``tarfile.TarFile``'s stream buffer, saves
    one copy of every image: the export is meant to keep up with a plain file copy.
    """

    def __init__(self, out):
        self.out = out
        self.members: dict[str, dict] = {}

    def _header(self, name: str, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, max(0, int(clock.now().timestamp()))
        try:
            header = info.tobuf(tarfile.USTAR_FORMAT)     # one block: every name this layout makes fits
        except ValueError:
            header = info.tobuf(tarfile.PAX_FORMAT)
        self.out.write(header)

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self.out.write(bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add(self, name: str, data: bytes, sha256: str | None = None) -> None:
        self._header(name, len(data))
        self.out.write(data)
        self._pad(len(data))
        self.members[name] = {"sha256": sha256 or hashlib.sha256(data).hexdigest(), "size": len(data)}

    def add_file(self, name: str, path: Path) -> None:
        """A temporary file of any size, streamed and hashed on the way."""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self._header(name, size)
            while block := fh.read(_COPY):
                digest.update(block)
                self.out.write(block)
        self._pad(size)
        self.members[name] = {"sha256": digest.hexdigest(), "size": size}

    def close(self) -> None:
        self.out.write(bytes(2 * tarfile.BLOCKSIZE))      # the end-of-archive marker


def _installed_pack(cfg) -> dict | None:
    manifest = Path(cfg.packs_dir) / "current" / "manifest.json"
    try:
        doc = json.loads(manifest.read_text())
        return {"id": str(doc.get("pack_id", "")), "version": str(doc.get("version", ""))}
    except (OSError, ValueError, AttributeError):
        return None


class _ImageReader(threading.Thread):
    """Reads, checks (and for research exports strips) the images the gatherer names, a few ahead
    of the writer: reading and hashing release the GIL, so they overlap with encrypting and writing."""

    DONE = None

    def __init__(self, store, gatherer: _Gatherer):
        super().__init__(name="export-images", daemon=True)
        self.store, self.gatherer = store, gatherer
        self.ready: queue.Queue = queue.Queue(maxsize=16)    # (sha256, member, bytes or None, record beside)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (item := self.gatherer.images.get()) is not _Gatherer.DONE:
                if self.gatherer.stop.is_set():
                    break
                sha, member, ext, beside = item
                self.ready.put((sha, member, _image_bytes(self.store, sha, ext, self.gatherer.deidentified), beside))
        except BaseException as exc:
            self.error = exc
        finally:
            self.ready.put(self.DONE)

    def drain(self) -> None:
        """Unblock the thread after the writer gave up."""
        while self.is_alive():
            try:
                self.ready.get(timeout=0.1)
            except queue.Empty:
                pass


def _image_bytes(store, sha: str, ext: str, deidentified: bool) -> bytes | None:
    """The image's bytes as they go into the bundle, or None when it is missing or damaged."""
    try:
        data = store.images.path(sha, ext).read_bytes()
    except (OSError, UserError):
        return None
    if hashlib.sha256(data).hexdigest() != sha:
        return None          # bit rot in the library: never pass damaged data on as if it were whole
    if not deidentified:
        return data
    try:
        return deidentify.strip_metadata(data, ext)
    except Exception:        # Pillow raises many kinds for undecodable files; such an image is skipped
        return None


def export_bundle(store, cfg, to_dir: str | os.PathLike, *, full: bool = False, deidentified: bool = False,
                  csv: bool = False, progress: Progress | None = None, by: str = "cli") -> ExportResult:
    """Write one bundle into ``to_dir`` (a stick's folder); return what it holds.

    Nothing new since the last export gives a result with ``path`` None and writes nothing.
    A written bundle is logged in the audit log as ``exchange.export`` by ``by``.
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
        result = ExportResult(None, str(uuidlib.uuid4()), kind, full or not cursor, since, seq_to)
        tmp = work / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)      # left over by an export that was killed
        tmp.mkdir(parents=True)
        gatherer = _Gatherer(store, cfg, since, tmp, deidentified, csv)
        reader = _ImageReader(store, gatherer)
        try:
            gatherer.start()
            reader.start()
            _write_bundle(store, cfg, to_dir, gatherer, reader, result, signing_key, recipient, report)
        finally:
            gatherer.stop.set()
            reader.drain()
            gatherer.join()
            shutil.rmtree(tmp, ignore_errors=True)
        if result.path is not None:
            with store.transaction():                 # the cursor and its audit entry: one disk commit
                store.meta_set(cursor_key(recipient_raw, kind), {
                    "seq": seq_to, "at": now_iso(), "bundle_id": result.bundle_id, "file": result.path.name,
                    "full": result.full})
                store.audit.log(by, "exchange.export", "bundle", result.bundle_id, {
                    "file": result.path.name, "kind": kind, "full": result.full, "counts": result.counts,
                    "supervisor_key": keys.fingerprint(recipient_raw)})
    result.seconds = time.monotonic() - started
    report("done", result.size, result.size)
    return result


def _write_bundle(store, cfg, to_dir: Path, gatherer: _Gatherer, reader: _ImageReader, result: ExportResult,
                  signing_key, recipient, report: Progress) -> None:
    post_id = store.post_id
    created = now_iso()
    header = {"bundle_id": result.bundle_id, "post_id": post_id, "post_name": store.post_name or cfg.post.name,
              "created": created, "kind": result.kind, "seq_from": result.seq_from, "seq_to": result.seq_to,
              "full": result.full, "software_version": __version__}
    stamp = created[:19].replace("-", "").replace(":", "")
    name = f"{_safe_name(post_id)}-{stamp}Z-{result.kind}-{result.bundle_id[:8]}{container.SUFFIX}"
    for stale in to_dir.glob(f".{_safe_name(post_id)}-*{container.SUFFIX}{container.PARTIAL_SUFFIX}"):
        stale.unlink(missing_ok=True)                 # a half bundle from an export that was cut off
    free = shutil.disk_usage(to_dir).free - (4 << 20)
    writer = container.BundleWriter(to_dir, name, header, signing_key, recipient)
    try:
        tar = _TarStream(writer)
        done = known = 0
        report("images", 0, 0)
        while (item := reader.ready.get()) is not _ImageReader.DONE:
            sha, member, data, beside = item
            if data is None:                          # missing or damaged on this box
                result.skipped_images.append(sha)
                continue
            known += len(data)
            if known > free:
                raise UserError(f"The stick is too small for this export: it has {free / 1e6:.0f} MB free.",
                                "Free some space on the stick, or use a bigger one, then export again.")
            tar.add(member, data, None if gatherer.deidentified else sha)
            if beside is not None:
                tar.add(layout.record_beside(member), beside)
            done += len(data)
            report("images", done, known)
        for thread in (reader, gatherer):
            if thread.error is not None:
                raise thread.error
        gatherer.join()                               # its files are complete once it has finished
        result.counts = dict(gatherer.counts, images=sum(1 for m in tar.members if layout.is_image(m)))
        if not any(gatherer.counts.get(kind) for kind in layout.RECORD_MEMBERS.values()):
            writer.abort()                            # nothing new: no bundle at all
            return
        report("records", done, known)
        for member in (*layout.RECORD_MEMBERS, layout.AUDIT_SUMMARY, layout.EXAMS_CSV):
            if member in gatherer.files:
                tar.add_file(member, gatherer.files[member])
        manifest = {
            "format": layout.MANIFEST_FORMAT, **header,
            "range": {"seq_from": result.seq_from, "seq_to": result.seq_to, "full": result.full,
                      "first_record_at": gatherer.first_at, "last_record_at": gatherer.last_at},
            "software": {"name": "bccdms", "version": __version__},
            "model_packs": {"installed": _installed_pack(cfg),
                            "used": [{"id": i, "version": v} for i, v in sorted(gatherer.packs)]},
            "counts": result.counts,
            "skipped_images": result.skipped_images,
            "members": tar.members,
        }
        tar.add(layout.MANIFEST, json.dumps(manifest, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        tar.close()
        result.path = writer.commit()
        result.size = result.path.stat().st_size
    except OSError as exc:
        writer.abort()
        raise UserError(f"The bundle could not be written to {to_dir} ({exc.strerror or exc}).",
                        "Check that the stick is still plugged in and has free space, then export again.") from None
    except BaseException:
        writer.abort()
        raise
