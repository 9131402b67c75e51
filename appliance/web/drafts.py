"""Exams being prepared: patient and analysis chosen, image not yet processed.

A draft is what the image step works on. Any image source attaches its picture through
``DraftStore.attach_image`` — the file upload, the microscope camera and the phone
colposcope alike — so the image that is shown, quality-checked and analysed is always the
one that arrived last. Nothing is written to the record store until "Start processing".

An image is prepared once, when it arrives (``prepare``: the engine's decode within its memory
budget, quality gate and model crops; `appliance.inference.prepared`); "Start processing"
hands that preparation to ``Engine.diagnose``. In memory a draft keeps only what was prepared
(a few MB whatever the file's size); the file itself is on disk, written durably:

    <data>/drafts/<draft_id>/draft.json          owner, patient, analysis, created_at, version, fields
    <data>/drafts/<draft_id>/field-<token>.<ext> each field's bytes as they arrived

``fields`` lists the images of the draft (today at most one: a new image replaces the old;
an exam of several fields appends). A draft's folder goes when the draft is saved, replaced,
discarded or expired (``ttl_seconds`` after it was opened); at start-up expired folders are
removed and the others are opened again (their images prepared again when first needed).

"Start processing" takes the draft with ``claim``: under the lock, and only when the image
is still the version the nurse looked at, the draft leaves the store as an immutable
``ClaimedDraft``. An image arriving while the models run then finds no open exam (it can
never be paired with the result), and a second tap on the button waits for the first and is
sent to the same exam (``processed_exam``).
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import BadImage, NotFound, UserError
from ..fsutil import fsync_dir, write_durably
from ..i18n import N_, translatable
from ..store.durable import os_error

log = logging.getLogger(__name__)

# How long a processed draft remembers its exam (a late second tap is sent there), and how many.
PROCESSED_TTL_SECONDS = 600
MAX_PROCESSED = 64
DRAFT_FILE = "draft.json"
LAYOUT_VERSION = 1
_DRAFT_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_EXT = re.compile(r"[a-z0-9]{1,5}")


class ImageChanged(UserError):
    """The draft's image is not the one the nurse looked at when she pressed the button."""


@dataclass(frozen=True)
class Field:
    """One image of a draft: its file in the draft's folder and what its preparation found."""
    file: str                           # name inside the draft's folder
    source: str                         # file | camera | phone
    version: int
    info: dict                          # sha256, width, height, format, bytes
    quality: dict | None

    def to_json(self) -> dict:
        return {"file": self.file, "source": self.source, "version": self.version,
                "quality": self.quality, **self.info}

    @classmethod
    def from_json(cls, doc: dict) -> "Field":
        info = {k: doc.get(k) for k in ("sha256", "width", "height", "format", "bytes")}
        return cls(str(doc["file"]), str(doc.get("source") or "file"), int(doc["version"]), info,
                   doc.get("quality"))


@dataclass
class Draft:
    id: str
    owner: str
    patient_uuid: str
    analysis: str
    created: float                      # on the store's clock (expiry)
    created_at: float                   # wall-clock seconds (on disk: expiry across a restart)
    folder: Path
    version: int = 0
    image_field: Field | None = None
    prepared: Any = None                # inference.prepared.PreparedImage of the field; None until prepared

    @property
    def has_image(self) -> bool:
        return self.image_field is not None

    @property
    def source(self) -> str | None:
        return self.image_field.source if self.image_field else None

    @property
    def image_info(self) -> dict:
        return dict(self.image_field.info) if self.image_field else {}

    @property
    def quality(self) -> dict | None:
        return self.image_field.quality if self.image_field else None

    @property
    def image_path(self) -> Path | None:
        return self.folder / self.image_field.file if self.image_field else None

    @property
    def image_bytes(self) -> bytes | None:
        """The image file as it arrived (read from the draft's folder)."""
        return self.image_path.read_bytes() if self.image_field else None

    @property
    def preview_jpeg(self) -> bytes | None:
        return self.prepared.preview_jpeg if self.prepared is not None else None

    def summary(self) -> dict:
        """What the image-step page polls for (no patient data)."""
        return {"id": self.id, "version": self.version, "has_image": self.has_image,
                "source": self.source, "image_info": self.image_info, "quality": self.quality}

    def to_json(self) -> dict:
        return {"layout": LAYOUT_VERSION, "id": self.id, "owner": self.owner, "patient_uuid": self.patient_uuid,
                "analysis": self.analysis, "created_at": self.created_at, "version": self.version,
                "fields": [self.image_field.to_json()] if self.image_field else []}


@dataclass(frozen=True)
class ClaimedDraft:
    """A draft taken for processing: the image the nurse saw, with its preparation, facts and
    preview, frozen together so the result, the stored bytes and the shown picture are one image."""
    id: str
    owner: str
    patient_uuid: str
    analysis: str
    created: float
    version: int
    source: str
    image_path: Path
    prepared: Any
    image_info: dict
    preview_jpeg: bytes | None
    quality: dict | None
    draft: Draft = field(repr=False, compare=False)

    @property
    def image_bytes(self) -> bytes:
        """The image file as it arrived (what the store keeps)."""
        return self.image_path.read_bytes()


@dataclass
class _Processing:
    """A claimed draft: being processed (``done`` not set) or finished with ``exam_uuid``."""
    owner: str
    since: float
    done: threading.Event = field(default_factory=threading.Event)
    exam_uuid: str | None = None


class DraftStore:
    def __init__(self, *, max_bytes: int, folder: os.PathLike | str,
                 prepare: Callable[[bytes | Path, str], Any],
                 ttl_seconds: float = 3600, max_drafts: int = 16,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.max_bytes = max_bytes
        self.folder = Path(folder)
        self._prepare = prepare
        self.ttl_seconds = ttl_seconds
        self.max_drafts = max_drafts
        self._clock, self._wall_clock = clock, wall_clock
        self._drafts: dict[str, Draft] = {}
        self._processing: dict[str, _Processing] = {}     # claimed drafts, by draft id
        self._lock = threading.Lock()
        # Waiters on new images (the image-step page long-polls for phone/camera arrivals).
        self._changed = threading.Condition(self._lock)
        self._preparing = threading.Lock()                # re-preparing a draft reopened from disk
        self._disk = threading.Lock()                     # draft.json writes after a new image
        self._reopen()

    # -- opening, finding, closing -----------------------------------------------------------
    def create(self, owner: str, patient_uuid: str, analysis: str) -> Draft:
        draft_id = secrets.token_urlsafe(16)
        draft = Draft(id=draft_id, owner=owner, patient_uuid=patient_uuid, analysis=analysis,
                      created=self._clock(), created_at=self._wall_clock(), folder=self.folder / draft_id)
        try:
            _make_folder(self.folder)
            _make_folder(draft.folder)
            write_durably(draft.folder / DRAFT_FILE, json.dumps(draft.to_json(), ensure_ascii=False).encode())
        except OSError as exc:
            _remove_folder(draft.folder)
            raise os_error(exc, self.folder, "save the record") from None
        with self._lock:
            gone = self._expire()
            # One draft per person at a time.
            gone += [self._drafts.pop(d) for d in [d.id for d in self._drafts.values() if d.owner == owner]]
            while len(self._drafts) >= self.max_drafts:
                gone.append(self._drafts.pop(min(self._drafts.values(), key=lambda d: d.created).id))
            self._drafts[draft.id] = draft
        _remove(gone)
        return draft

    def get(self, draft_id: str, owner: str | None = None) -> Draft:
        """The draft, or NotFound when it expired, was processed or belongs to someone else."""
        with self._lock:
            gone = self._expire()
            draft = self._drafts.get(draft_id)
        _remove(gone)
        if draft is None or (owner is not None and draft.owner != owner):
            raise NotFound(N_("This exam is no longer open (it was finished, or it waited too long)."),
                           N_("Open the patient again and choose the analysis."))
        if draft.image_field is not None and draft.prepared is None:
            self._prepare_reopened(draft)
        return draft

    def discard(self, draft_id: str) -> None:
        with self._lock:
            gone = [self._drafts.pop(draft_id)] if draft_id in self._drafts else []
        _remove(gone)

    def discard_owner(self, owner: str) -> None:
        with self._lock:
            gone = [self._drafts.pop(d) for d in [d.id for d in self._drafts.values() if d.owner == owner]]
        _remove(gone)

    # -- images ------------------------------------------------------------------------------
    def attach_image(self, draft_id: str, data: bytes, source: str) -> Draft:
        """Prepare ``data`` (safe decode, quality gate, model crops), keep its file in the
        draft's folder and make it the draft's image.

        Raises BadImage (nothing changes) for anything that is not a readable image of an
        accepted type and size, and inference.budget.Busy when the box has no memory free to
        decode it within its wait.
        """
        draft = self.get(draft_id)
        if not data:
            raise BadImage(N_("The file is empty."), N_("Choose an image file from the microscope or camera."))
        if len(data) > self.max_bytes:
            raise translatable(BadImage)(N_("The image is too large (%(size)d MB; the limit is %(limit)d MB)."),
                                         N_("Use a smaller image or a lower camera resolution."),
                                         size=round(len(data) / 1e6), limit=round(self.max_bytes / 1e6))
        # The file is written (and fsynced: slow on an SD card) while the image is prepared.
        staged = draft.folder / f"field-{secrets.token_hex(8)}.new"
        writing = _writer().submit(write_durably, staged, data)
        try:
            prepared = self._prepare(data, draft.analysis)    # BadImage for anything unsafe or unreadable
        except BaseException:
            _discard_staged(writing, staged)
            raise
        try:
            writing.result()
            name = staged.with_suffix("." + prepared.ext).name
            path = draft.folder / name
            # Made durable with draft.json below: its write fsyncs this same folder.
            os.replace(staged, path)
        except FileNotFoundError:
            raise _closed() from None               # the draft was closed (its folder removed) meanwhile
        except OSError as exc:
            staged.unlink(missing_ok=True)
            raise os_error(exc, draft.folder, "save the image") from None
        prepared = replace(prepared, source=path)
        info = dict(prepared.info(), bytes=len(data))
        quality = _quality_dict(prepared.quality)
        with self._disk:            # draft.json is written in the order the versions are given
            with self._changed:
                current, old = self._drafts.get(draft_id), None
                if current is not None:
                    old = current.image_field
                    current.version += 1
                    current.image_field = Field(name, source, current.version, info, quality)
                    current.prepared = prepared
                    self._changed.notify_all()
            if current is None:
                path.unlink(missing_ok=True)
                raise _closed()
            _write_draft(current)
            if old is not None:
                (current.folder / old.file).unlink(missing_ok=True)
        return current

    def wait_for_change(self, draft_id: str, owner: str, seen_version: int, timeout: float) -> Draft:
        """Block up to ``timeout`` seconds until the draft's image is newer than ``seen_version``;
        NotFound once the draft is closed (a claimed draft: the route asks `processed_exam`)."""
        deadline = self._clock() + timeout
        with self._changed:
            while True:
                draft = self._drafts.get(draft_id)
                if draft is None or draft.owner != owner or draft.version != seen_version:
                    break
                left = deadline - self._clock()
                if left <= 0:
                    break
                self._changed.wait(min(left, 1.0))
        return self.get(draft_id, owner)

    # -- "Start processing" ------------------------------------------------------------------
    def claim(self, draft_id: str, owner: str, version) -> ClaimedDraft:
        """Take the draft out for processing, if its image is still ``version`` (what the page
        showed). Raises NotFound (closed, someone else's, or already claimed), UserError (no image)
        or ImageChanged (a newer image arrived: the draft stays open)."""
        self.get(draft_id, owner)                       # prepared again if it was reopened from disk
        with self._changed:
            gone = self._expire()
            draft = self._drafts.get(draft_id)
            if draft is None or draft.owner != owner:
                raise NotFound(N_("This exam is no longer open (it was finished, or it waited too long)."),
                               N_("Open the patient again and choose the analysis."))
            if not draft.has_image or draft.prepared is None:
                raise UserError(N_("There is no image yet."), N_("Capture or choose an image first."))
            if _version(version) != draft.version:
                raise ImageChanged(N_("The image changed — look at it again before processing."),
                                   N_("The newest image is shown now; press “Start processing” when it is the right one."))
            del self._drafts[draft_id]
            self._processing[draft_id] = _Processing(owner, self._clock())
            self._changed.notify_all()          # long polls of the image step follow it to its exam
            claimed = ClaimedDraft(draft.id, draft.owner, draft.patient_uuid, draft.analysis, draft.created,
                                   draft.version, draft.source or "file", draft.image_path, draft.prepared,
                                   draft.image_info, draft.preview_jpeg, draft.quality, draft)
        _remove(gone)
        return claimed

    def finish(self, claimed: ClaimedDraft, exam_uuid: str) -> None:
        """The claimed draft is saved as ``exam_uuid`` (a second tap waiting for it goes there);
        its folder goes."""
        with self._lock:
            entry = self._processing.get(claimed.id)
            if entry is not None:
                entry.exam_uuid = exam_uuid
                entry.done.set()
        _remove([claimed.draft])

    def give_back(self, claimed: ClaimedDraft) -> None:
        """Processing failed (nothing saved): reopen the draft as it was, so the nurse can retry —
        unless she has opened another exam meanwhile (then its folder goes)."""
        with self._changed:
            entry = self._processing.pop(claimed.id, None)
            reopened = not any(d.owner == claimed.owner for d in self._drafts.values())
            if reopened:
                self._drafts[claimed.id] = claimed.draft
            self._changed.notify_all()
        if not reopened:
            _remove([claimed.draft])
        if entry is not None:
            entry.done.set()

    def processed_exam(self, draft_id: str, owner: str, timeout: float) -> str | None:
        """The exam a claimed draft became, waiting up to ``timeout`` s while it is processed;
        None when the draft was never claimed by ``owner`` or its processing failed."""
        with self._lock:
            gone = self._expire()
            entry = self._processing.get(draft_id)
        _remove(gone)
        if entry is None or entry.owner != owner:
            return None
        entry.done.wait(timeout)
        return entry.exam_uuid

    # -- expiry and the folder on disk -------------------------------------------------------
    def _expire(self) -> list[Draft]:
        """Drop expired drafts (under the lock); their folders are for the caller to `_remove`
        once the lock is released."""
        now = self._clock()
        gone = [self._drafts.pop(d) for d in [d.id for d in self._drafts.values() if now - d.created > self.ttl_seconds]]
        finished = [k for k, p in self._processing.items() if p.done.is_set()]
        for old in [k for k in finished if now - self._processing[k].since > PROCESSED_TTL_SECONDS]:
            del self._processing[old]
        for old in finished[:max(0, len(self._processing) - MAX_PROCESSED)]:
            self._processing.pop(old, None)
        return gone

    def _reopen(self) -> None:
        """At start-up: remove expired or unreadable draft folders, open the others again."""
        if not self.folder.is_dir():
            return
        now_wall, now = self._wall_clock(), self._clock()
        for entry in sorted(self.folder.iterdir()):
            draft = _read_draft(entry, now, now_wall) if entry.is_dir() and _DRAFT_ID.fullmatch(entry.name) else None
            if draft is None or now_wall - draft.created_at > self.ttl_seconds:
                _remove_folder(entry)
                continue
            for old in [d for d in self._drafts.values() if d.owner == draft.owner]:
                if old.created_at <= draft.created_at:
                    _remove([self._drafts.pop(old.id)])
            if any(d.owner == draft.owner for d in self._drafts.values()):
                _remove([draft])
                continue
            self._drafts[draft.id] = draft
        # The folder may also hold files left by a writer killed half-way (.tmp-): drafts only.
        for stray in self.folder.iterdir():
            if not stray.is_dir():
                stray.unlink(missing_ok=True)

    def _prepare_reopened(self, draft: Draft) -> None:
        """A draft reopened from disk gets its preparation back from its file (once)."""
        with self._preparing:
            if draft.prepared is not None or draft.image_field is None:
                return
            try:
                prepared = replace(self._prepare(draft.image_path, draft.analysis), source=draft.image_path)
            except (UserError, OSError) as exc:
                log.warning("draft %s: its image cannot be prepared again (%s); it is left without one",
                            draft.id, exc)
                with self._disk:
                    with self._changed:
                        draft.image_field = None
                        self._changed.notify_all()
                    _write_draft(draft)
                return
            with self._changed:
                draft.prepared = prepared
                draft.image_field = replace(draft.image_field, quality=_quality_dict(prepared.quality))


_writer_pool: ThreadPoolExecutor | None = None
_writer_lock = threading.Lock()


def _writer() -> ThreadPoolExecutor:
    """The threads that write arriving images to disk (waiting on the disk, not on the CPU)."""
    global _writer_pool
    with _writer_lock:
        if _writer_pool is None:
            _writer_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="draft-writer")
    return _writer_pool


def _discard_staged(writing, staged: Path) -> None:
    try:
        writing.result()
    except OSError:
        pass
    staged.unlink(missing_ok=True)


def _make_folder(folder: Path) -> None:
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(folder.parent)


def _write_draft(draft: Draft) -> None:
    """draft.json as the draft is now; a failure costs only the draft's survival of a restart."""
    try:
        write_durably(draft.folder / DRAFT_FILE, json.dumps(draft.to_json(), ensure_ascii=False).encode())
    except FileNotFoundError:
        pass                            # the draft was closed meanwhile: its folder is gone
    except OSError as exc:
        log.warning("draft %s: draft.json cannot be written (%s); it will not survive a restart", draft.id, exc)


def _read_draft(folder: Path, now: float, now_wall: float) -> Draft | None:
    try:
        doc = json.loads((folder / DRAFT_FILE).read_bytes())
        fields = [Field.from_json(f) for f in doc.get("fields") or []]
        if doc.get("layout") != LAYOUT_VERSION or doc["id"] != folder.name:
            return None
        created_at = float(doc["created_at"])
        draft = Draft(id=doc["id"], owner=str(doc["owner"]), patient_uuid=str(doc["patient_uuid"]),
                      analysis=str(doc["analysis"]), created=now - max(0.0, now_wall - created_at),
                      created_at=created_at, folder=folder, version=int(doc.get("version") or 0))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = fields[-1] if fields else None
    if current is not None and (not _safe_name(current.file) or not (folder / current.file).is_file()):
        current = None
    draft.image_field = current
    # A file written before a power cut whose draft.json never named it: not the draft's image.
    for path in folder.iterdir():
        if path.is_file() and path.name != DRAFT_FILE and (current is None or path.name != current.file):
            path.unlink(missing_ok=True)
    return draft


def _safe_name(name: str) -> bool:
    stem, _, ext = name.rpartition(".")
    return stem.startswith("field-") and "/" not in name and _EXT.fullmatch(ext) is not None


def _remove(drafts: list[Draft]) -> None:
    for draft in drafts:
        _remove_folder(draft.folder)


def _remove_folder(folder: Path) -> None:
    """A draft's folder goes (its image was saved, replaced or given up)."""
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("the draft folder %s cannot be removed (%s)", folder, exc)
        return
    try:
        fsync_dir(folder.parent)
    except OSError:
        pass


def _closed() -> NotFound:
    return NotFound(N_("This exam is no longer open."), N_("Open the patient again and choose the analysis."))


def _version(value) -> int | None:
    """The image version a form posted (a whole number), else None (never matches)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _quality_dict(report) -> dict | None:
    if report is None or isinstance(report, dict):
        return report
    return report.to_json()
