"""Import: verify, decrypt, stage and check a bundle whole; only then merge it into the store.

Order for each bundle (a refusal at any step leaves the store exactly as it was):

1. header and trailer: a whole bundle of a known format (a cut file has no trailer);
2. signature: from a known post and unaltered (one hashing pass, no key needed);
3. recipient: encrypted to this box's supervisor key;
4. decrypt and stage every member into a private folder (safe names only, limits, bombs);
5. manifest: exactly the members found, matching sha256 and sizes, same post and range as
   the signed header; identified images must hash to their names;
6. records: well-formed, all of the signing post, no uuid twice; a bundle that holds nothing but
   versions older than those already stored (a replayed old bundle) is refused. Older and newer
   are the post's change numbers (appliance.store.ordering), never its clock: a record dated in
   the future or before this software existed is merged like any other and named in the report;
7. merge: images into the library, then patients, exams, visits, referrals and follow-ups,
   each with ``store.merge`` (by uuid, the later change wins, the other version stays in the
   record's history). A visit, referral or follow-up must name a woman, exams and visits this box
   has or the bundle brings (step 6 refuses it otherwise).

Re-importing a bundle merges nothing new and writes nothing. Step 7 commits in groups (images
in batches, records a few hundred per store transaction), so a bundle is all-or-nothing up to
step 6 only: an error during step 7 (a full disk) leaves the groups before it merged and the
failing group out whole; a crash (power cut) can also leave the group being committed partly
merged (``store.transaction``). Either way the bundle stays listed as an import in progress
(``incomplete_imports``: the self-check and the import page show it) until the same bundle is
imported again, which completes it (merging is idempotent).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .. import clock
from ..errors import NotFound, UserError
from ..store import ordering
from ..store.images import identify
from ..store.incoming import check_incoming
from . import container, keys, layout, workdir
from .container import BundleRefused
from .workdir import now_iso
from .staging import MAX_RECORD_LINE, Limits, Staged, stage_payload

log = logging.getLogger("appliance.exchange")

POSTS_META = "exchange.posts"
# Bundles whose merge began and has not finished (a crash, a power cut, a full disk part-way):
# bundle id -> file, post, start. The self-check and the import page show them until the same
# bundle is imported again, which completes it.
INCOMPLETE_META = "exchange.imports_incomplete"
Progress = Callable[[str, int, int], None]


@dataclass
class ImportReport:
    path: Path
    bundle_id: str = ""
    post_id: str = ""
    post_name: str = ""
    kind: str = ""
    created: str = ""
    known_post: bool = True
    merged: dict[str, Counter] = field(default_factory=dict)
    images_added: int = 0
    images_present: int = 0
    warnings: list[str] = field(default_factory=list)
    already_imported: bool = False
    extracted_to: Path | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.images_added > 0 or any(c["inserted"] or c["updated"] for c in self.merged.values())

    def to_json(self) -> dict:
        return {"bundle": str(self.path), "bundle_id": self.bundle_id, "post_id": self.post_id,
                "post_name": self.post_name, "kind": self.kind, "created": self.created,
                "known_post": self.known_post, "merged": {k: dict(v) for k, v in self.merged.items()},
                "images_added": self.images_added, "images_present": self.images_present,
                "already_imported": self.already_imported, "warnings": self.warnings,
                "extracted_to": str(self.extracted_to) if self.extracted_to else None,
                "seconds": round(self.seconds, 3)}


def limits(cfg) -> Limits:
    return Limits(max_expanded=int(cfg.exchange.max_import_mb) * 1_000_000)


@contextlib.contextmanager
def _import_lock(cfg) -> Iterator[Path]:
    """One import at a time per box; its staging folder is private to the holder."""
    with workdir.exclusive(cfg, "import", "import") as work:
        staging = work / "staging"
        shutil.rmtree(staging, ignore_errors=True)    # left over by an import that was killed
        staging.mkdir()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)   # decrypted patient data never lingers


@contextlib.contextmanager
def _unreadable_is_refused(env: container.Envelope) -> Iterator[None]:
    """A stick pulled out, or a full disk while unpacking: that bundle is refused, the others go on.
    (The store reports its own write errors as StoreError.)"""
    try:
        yield
    except OSError as exc:
        raise BundleRefused(f"The bundle {env.path.name} could not be read or unpacked ({exc.strerror or exc}).",
                            "Check that the stick is still plugged in and that this box has free disk space, "
                            "then import again; nothing was changed by this bundle.") from None


def inspect(path, cfg) -> dict:
    """What a bundle says about itself and whether its signature holds, without decrypting it."""
    env = container.read_envelope(path)
    info = {"path": str(path), "post_id": env.post_id, "post_name": env.header.get("post_name", ""),
            "created": env.header.get("created", ""), "kind": env.header.get("kind", ""),
            "full": bool(env.header.get("full")), "size": env.size, "bundle_id": env.header.get("bundle_id", "")}
    try:
        info["known_post"] = container.verify_envelope(env, cfg.exchange.known_posts, accept_unknown=True)
        info["signature_ok"] = True
        info["problem"] = None if info["known_post"] else "unknown post"
    except BundleRefused as exc:
        info.update(known_post=env.post_id in cfg.exchange.known_posts, signature_ok=False, problem=exc.message)
    return info


def _sort_key(env: container.Envelope) -> tuple:
    h = env.header
    return (env.post_id, int(h.get("seq_to") or 0), str(h.get("created") or ""))


def import_bundles(store, cfg, paths, *, accept_unknown: bool = False, by: str = "cli",
                   progress: Progress | None = None) -> list[ImportReport | BundleRefused]:
    """Import several bundles, oldest first per post; each one is checked whole before anything of it
    is merged, and merged on its own (see the module docstring for a merge cut short)."""
    envelopes: list[container.Envelope | BundleRefused] = []
    for path in paths:
        try:
            envelopes.append(container.read_envelope(path))
        except BundleRefused as exc:
            envelopes.append(exc)
    ordered = [e for e in envelopes if isinstance(e, BundleRefused)] + sorted(
        (e for e in envelopes if not isinstance(e, BundleRefused)), key=_sort_key)
    results: list[ImportReport | BundleRefused] = []
    for item in ordered:
        if isinstance(item, BundleRefused):
            results.append(item)
            continue
        try:
            results.append(import_envelope(store, cfg, item, accept_unknown=accept_unknown, by=by,
                                           progress=progress))
        except BundleRefused as exc:
            results.append(exc)
    return results


def import_bundle(store, cfg, path, **kwargs) -> ImportReport:
    return import_envelope(store, cfg, container.read_envelope(path), **kwargs)


def _open_verified(cfg, env: container.Envelope, accept_unknown: bool, report: ImportReport, staging: Path,
                   progress: Progress, remembered: dict | None = None) -> Staged:
    key = env.header.get("post_signing_key")
    if remembered and remembered.get("signing_key") and remembered["signing_key"] != key \
            and env.post_id not in cfg.exchange.known_posts:
        # --accept-unknown trusts a new post once; it never lets another key take over that post later.
        raise BundleRefused(f"The bundle {env.path.name} was refused: it claims to come from post {env.post_id}, "
                            "but is signed with a different key than the bundles imported from that post before.",
                            "Do not import it. If the post really has a new key, add it to [exchange] known_posts.")
    report.known_post = container.verify_envelope(env, cfg.exchange.known_posts, accept_unknown=accept_unknown)
    if not report.known_post:
        report.warnings.append(f"Post {env.post_id} is not in [exchange] known_posts; imported because "
                               "--accept-unknown was given.")
    supervisor_key = keys.load_supervisor_key(cfg)
    progress("decrypt", 0, env.ct_len)
    root = Path(tempfile.mkdtemp(prefix="bundle-", dir=staging))
    with container.open_payload(env, supervisor_key) as payload:
        return stage_payload(env, _Counting(payload, env.ct_len, progress), root, limits(cfg))


class _Counting:
    """Report decryption progress as the tar reader pulls bytes."""

    def __init__(self, stream, total: int, progress: Progress):
        self._stream, self._total, self._progress = stream, total, progress
        self._done = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._done += len(data)
        self._progress("decrypt", min(self._done, self._total), self._total)
        return data


def import_envelope(store, cfg, env: container.Envelope, *, accept_unknown: bool = False, by: str = "cli",
                    progress: Progress | None = None) -> ImportReport:
    started = time.monotonic()
    progress = progress or (lambda stage, done, total: None)
    h = env.header
    report = ImportReport(env.path, str(h.get("bundle_id", "")), env.post_id, str(h.get("post_name", "")),
                          str(h.get("kind", "")), str(h.get("created", "")))
    if report.kind == layout.KIND_DEIDENTIFIED:
        raise BundleRefused(f"The bundle {env.path.name} is a de-identified research export; it is not merged "
                            "into the records.", "Unpack it for the researchers with "
                            "'appliance import --extract-to FOLDER BUNDLE'.")
    if report.kind != layout.KIND_RECORDS:
        raise BundleRefused(f"The bundle {env.path.name} is of an unknown kind ({report.kind!r}).",
                            "Update the software on this box.")
    if env.post_id == store.post_id:
        raise BundleRefused(f"The bundle {env.path.name} was made by this very box (post {env.post_id}).",
                            "Import bundles on the supervisor's box, not on the post that made them.")
    with _import_lock(cfg) as staging:
        with _unreadable_is_refused(env):
            staged = _open_verified(cfg, env, accept_unknown, report, staging, progress,
                                    imported_posts(store).get(env.post_id))
        progress("check", 0, 0)
        totals = _check_records(store, env, staged, report)
        _check_images(store, cfg, env, staged)
        report.already_imported = store.meta_get(_bundle_key(report.bundle_id)) is not None
        if not report.already_imported:
            _mark_incomplete(store, env, report, by)      # stays visible if the merge does not finish
        _merge(store, staged, report, progress, totals)
        _note_gap(store, env, report)
        if report.changed or not report.already_imported:
            _remember(store, env, staged, report, by)
        _mark_complete(store, report)
    report.seconds = time.monotonic() - started
    return report


def extract_bundle(cfg, path, out_dir, *, accept_unknown: bool = False,
                   progress: Progress | None = None) -> ImportReport:
    """Verify and unpack a bundle into ``out_dir/<bundle name>/`` (records as JSON lines), merging nothing."""
    progress = progress or (lambda stage, done, total: None)
    env = container.read_envelope(path)
    h = env.header
    report = ImportReport(env.path, str(h.get("bundle_id", "")), env.post_id, str(h.get("post_name", "")),
                          str(h.get("kind", "")), str(h.get("created", "")))
    out_dir = Path(out_dir)
    target = out_dir / env.path.name.removesuffix(container.SUFFIX)
    if target.exists():
        raise UserError(f"The folder {target} already exists.", "Choose another folder, or remove that one first.")
    started = time.monotonic()
    with _import_lock(cfg) as staging:
        with _unreadable_is_refused(env):
            staged = _open_verified(cfg, env, accept_unknown, report, staging, progress)
        for kind, expanded in staged.records.items():
            compressed = staged.members.pop(next(n for n, k in layout.RECORD_MEMBERS.items() if k == kind))
            compressed.unlink()
            expanded.replace(staged.root / "records" / f"{kind}.jsonl")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged.root), str(target))
    report.extracted_to = target
    report.seconds = time.monotonic() - started
    return report


# -- records ---------------------------------------------------------------------------------

def _lines(bundle: Path, path: Path) -> Iterator[dict]:
    """The records of a staged JSON-lines file, one at a time (never the whole file in memory)."""
    with open(path, "rb") as fh:
        number = 0
        while True:
            line = fh.readline(MAX_RECORD_LINE + 1)
            if not line:
                return
            number += 1
            if len(line) > MAX_RECORD_LINE:
                raise _bad_record(bundle, number, "is far too long")
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                raise _bad_record(bundle, number, "is not valid JSON") from None
            if not isinstance(record, dict):
                raise _bad_record(bundle, number, "is not a record")
            yield record


def _bad_record(bundle: Path, number: int, what: str) -> BundleRefused:
    return BundleRefused(f"The bundle {bundle.name} was refused: record line {number} {what}.",
                         "Do not import it; ask the health post to export again.")


def _stored(store, kind: str, uuid: str) -> dict | None:
    return getattr(store, kind).get(uuid)


# What a record of each kind names, and the kind it must be of: (field or path, kind). The named
# record must be in this store already or in the same bundle (merged before it).
_REFERENCES = {
    "exams": (("patient_uuid", "patients"),),
    "visits": (("patient_uuid", "patients"), ("exam_uuids", "exams")),
    "referrals": (("patient_uuid", "patients"), ("visit_uuid", "visits"), ("exam_uuid", "exams"),
                  ("outcome.result_exam_uuid", "exams")),
    "followups": (("patient_uuid", "patients"), ("visit_uuid", "visits"), ("referral_uuid", "referrals")),
}


def _named(record: dict, field: str) -> list[str]:
    value = record
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and v]


def _unknown_reference(store, kind: str, record: dict, in_bundle: dict[str, set]) -> str | None:
    """What an incoming record names that neither this store nor the bundle has (None: all known)."""
    if kind == "exams":
        return None               # exams name their patient; the store's own check covers it at merge
    for field, target in _REFERENCES.get(kind, ()):
        for uuid in _named(record, field):
            if uuid not in in_bundle.get(target, ()) and not store.has(target, uuid):
                return f"names a {target[:-1]} that is neither in this bundle nor on this box ({uuid})"
    return None


def _check_records(store, env: container.Envelope, staged: Staged, report: ImportReport) -> dict[str, int]:
    """Every record must be well-formed and from the signing post, and the bundle must bring
    something this box does not have yet. Returns the number of records of each kind; adds report
    lines for records older than the versions here and for records with implausible dates."""
    totals = {}
    in_bundle: dict[str, set] = {}
    fresh = older = 0
    first_older: tuple[str, dict, dict] | None = None
    odd_dates: list[str] = []
    now = clock.now()
    for kind, path in staged.records.items():
        seen: set[str] = in_bundle.setdefault(kind, set())
        for number, record in enumerate(_lines(env.path, path), 1):
            problem = _record_problem(kind, record, env.post_id)
            if problem:
                raise _bad_record(env.path, number, f"of {kind} {problem}")
            if record["uuid"] in seen:
                raise _bad_record(env.path, number, f"of {kind} repeats the record {record['uuid']}")
            problem = _unknown_reference(store, kind, record, in_bundle)
            if problem:
                raise _bad_record(env.path, number, f"of {kind} {problem}")
            seen.add(record["uuid"])
            odd = _odd_date(kind, record, now)
            if odd:
                odd_dates.append(odd)
            existing = _stored(store, kind, record["uuid"])
            if existing is None:
                fresh += 1
                continue
            if existing.get("post_id") != env.post_id:
                raise BundleRefused(f"The bundle {env.path.name} was refused: it would overwrite a record of "
                                    f"another post ({existing.get('post_id')}).",
                                    "Do not import it; report it to the technician.")
            if ordering.is_later(existing, record):
                older += 1
                first_older = first_older or (kind, record, existing)
            elif ordering.is_later(record, existing):
                fresh += 1
        totals[kind] = len(seen)
    if first_older is not None:
        kind, record, existing = first_older
        example = (f"{kind[:-1]} {record['uuid']}: this box has {_version(existing)}, the bundle "
                   f"{_version(record)}")
        if not fresh:
            raise BundleRefused(
                f"The bundle {env.path.name} was refused: it is older than records already imported from post "
                f"{env.post_id} (for example {example}) and holds nothing newer; importing it would only roll "
                "records back.",
                "Nothing was changed and nothing is missing: this box already has later versions of every record "
                "in it (it is an old bundle of that post, imported again or after a later one). It can be deleted "
                "from the stick.")
        report.warnings.append(
            f"{older} record(s) in this bundle are older than the versions already here (for example {example}): "
            "the later versions were kept, and the bundle's are in those records' history.")
    if odd_dates:
        line = (f"{len(odd_dates)} record(s) from post {env.post_id} carry dates that cannot be right, so that "
                f"post's clock was probably wrong (for example {'; '.join(odd_dates[:3])}). They were merged by "
                "the post's change numbers like any other; their dates are kept as they are. Ask the post's "
                "technician to check the box's date ('appliance doctor').")
        log.warning("%s", line)
        report.warnings.append(line)
    return totals


def _version(record: dict) -> str:
    change = ordering.change_of(record)
    dated = str(record.get("updated_at", ""))
    return f"its change {change} (dated {dated})" if change else f"its version dated {dated}"


def _odd_date(kind: str, record: dict, now) -> str | None:
    """``"exam <uuid> changed on <date> (in the future)"`` for a record dated implausibly, else None."""
    for key, verb in (("updated_at", "changed"), ("created_at", "created")):
        why = clock.implausible(record[key], now)
        if why:
            return f"{kind[:-1]} {record['uuid']} {verb} on {record[key]} ({why})"
    return None


def _record_problem(kind: str, record: dict, post_id: str) -> str | None:
    """What is wrong with an incoming record, in the store's own terms; None when it may be merged."""
    try:
        check_incoming(kind, record)
    except UserError as exc:
        return exc.message.rstrip(".")
    if record.get("post_id") != post_id:
        return f"belongs to another post ({record.get('post_id')!r}), not to the post that signed the bundle"
    return None


def _check_images(store, cfg, env: container.Envelope, staged: Staged) -> None:
    """Images the store does not have yet must be images it will accept (before anything is merged)."""
    max_bytes = cfg.server.max_upload_mb * 1024 * 1024
    for name, path in staged.images():
        _, _, sha, ext = layout.parse_image_member(name)
        if _has_image(store, sha, ext):
            continue
        try:
            found_ext, _, _ = identify(path.read_bytes(), max_bytes)
        except UserError as exc:
            raise BundleRefused(f"The bundle {env.path.name} was refused: the image {name} cannot be stored "
                                f"({exc.message.rstrip('.')}).", "Ask the health post to export again.") from None
        if found_ext != ext and {found_ext, ext} != {"jpg", "jpeg"}:
            raise BundleRefused(f"The bundle {env.path.name} was refused: the image {name} is not a {ext} file.",
                                "Ask the health post to export again.")


def _has_image(store, sha: str, ext: str) -> bool:
    try:
        store.images.path(sha, ext)
        return True
    except NotFound:
        return False


# -- merging ---------------------------------------------------------------------------------

# Images put in one batch of the library: written, then fsynced together in one round.
IMAGE_GROUP = 1000
# Records merged in one store transaction: they reach the disk together (a few chunk files, one
# round of fsyncs) or, when anything in the group fails, none of them does.
MERGE_GROUP = 500


def _groups(items: Iterable, size: int) -> Iterator[list]:
    group: list = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def _merge(store, staged: Staged, report: ImportReport, progress: Progress, totals: dict[str, int]) -> None:
    """Images first (records never point at an image that is not on disk), then patients, then exams.

    Images go in batches (``store.images.batch``): written as they come, made durable together at
    the end of each batch, before any record. Records go in groups of ``MERGE_GROUP``, each one
    ``store.transaction()``: those the store does not have yet with ``store.bulk_insert`` (one write
    per chunk file, not per record), those it has with ``store.merge`` (newer wins, the other version
    kept in history), all as ``check_incoming`` cleaned them during the checks. A failure inside a
    group leaves that group out whole; what earlier groups merged stays, and importing the bundle
    again completes it.
    """
    images = staged.images()
    shas: set[str] = set()
    for first, group in enumerate(_groups(images, IMAGE_GROUP)):
        with store.images.batch():
            for number, (name, path) in enumerate(group, first * IMAGE_GROUP + 1):
                _, _, sha, ext = layout.parse_image_member(name)
                if _has_image(store, sha, ext):
                    report.images_present += 1
                else:
                    store.images.put(path.read_bytes())
                    report.images_added += 1
                progress("images", number, len(images))
    for kind in layout.RECORD_MEMBERS.values():
        counts = report.merged.setdefault(kind, Counter(inserted=0, updated=0, unchanged=0, older=0))
        path = staged.records.get(kind)
        if path is None:
            continue
        done = 0
        for group in _groups(_lines(report.path, path), MERGE_GROUP):
            with store.transaction():
                merged = _merge_group(store, kind, group)
            counts.update(merged)
            done += len(group)
            progress(kind, done, totals.get(kind, 0))
            if kind == "exams":
                shas.update(_image_sha(record) for record in group)
    shas.discard("")
    if shas and report.merged.get("exams", {}).get("inserted"):
        # File the new exams' images under their classes (store.merge re-files the exams it
        # changes): only the bundle's images, so the work follows the bundle's size, not the store's.
        store.images.reconcile(shas)


def _image_sha(record: dict) -> str:
    image = record.get("image") if isinstance(record, dict) else None
    sha = image.get("sha256") if isinstance(image, dict) else None
    return sha if isinstance(sha, str) else ""


def _merge_group(store, kind: str, records: list[dict]) -> Counter:
    """Merge records into the store (call inside a transaction); how many of each outcome."""
    outcome: Counter = Counter()
    new: list[dict] = []
    for record in records:
        clean = check_incoming(kind, record)
        if _stored(store, kind, clean["uuid"]) is None:
            new.append(clean)
        else:
            outcome[store.merge(kind, clean)] += 1
    if new:
        outcome["inserted"] += store.bulk_insert(kind, new)
    return outcome


def _bundle_key(bundle_id: str) -> str:
    return f"exchange.imported.{bundle_id}"


def _note_gap(store, env: container.Envelope, report: ImportReport) -> None:
    """Warn when the post's previous bundle never arrived (its records would be missing)."""
    known = (store.meta_get(POSTS_META) or {}).get(env.post_id)
    seq_from = int(env.header.get("seq_from") or 0)
    if known and not env.header.get("full") and seq_from > int(known.get("last_seq_to") or 0):
        report.warnings.append(
            f"A bundle from post {env.post_id} seems to be missing: this one starts after change {seq_from}, "
            f"the last one imported ended at {known.get('last_seq_to')}. Ask the post for a full export "
            "('appliance export --full').")


def _remember(store, env: container.Envelope, staged: Staged, report: ImportReport, by: str) -> None:
    posts = dict(store.meta_get(POSTS_META) or {})
    entry = dict(posts.get(env.post_id) or {})
    seq_to = int(env.header.get("seq_to") or 0)
    entry.update({
        "name": report.post_name or entry.get("name", ""),
        "signing_key": env.header.get("post_signing_key"),
        "last_import_at": now_iso(),
        "bundles": int(entry.get("bundles") or 0) + (0 if report.already_imported else 1),
    })
    if seq_to >= int(entry.get("last_seq_to") or 0):
        entry.update({"last_seq_to": seq_to, "last_bundle_id": report.bundle_id,
                      "last_bundle_created": report.created})
    posts[env.post_id] = entry
    store.meta_set(POSTS_META, posts)
    store.meta_set(_bundle_key(report.bundle_id), {"imported_at": now_iso(), "post_id": env.post_id,
                                                   "file": env.path.name})
    summary_path = staged.members.get(layout.AUDIT_SUMMARY)
    audit_summary = None
    if summary_path is not None:
        with contextlib.suppress(ValueError, OSError):
            audit_summary = json.loads(summary_path.read_text())[:500]
    store.audit.log(by, "exchange.import", "bundle", report.bundle_id, {
        "post_id": env.post_id, "post_name": report.post_name, "file": env.path.name,
        "created": report.created, "range": staged.manifest.get("range"),
        "merged": {k: dict(v) for k, v in report.merged.items()}, "images_added": report.images_added,
        "post_audit_summary": audit_summary})


def imported_posts(store) -> dict[str, dict]:
    """Posts this box has imported from: id -> name, key, last import, bundles."""
    return dict(store.meta_get(POSTS_META) or {})


def _mark_incomplete(store, env: container.Envelope, report: ImportReport, by: str) -> None:
    incomplete = dict(store.meta_get(INCOMPLETE_META) or {})
    incomplete[report.bundle_id] = {"file": env.path.name, "post_id": env.post_id, "post_name": report.post_name,
                                    "started_at": now_iso(), "by": by}
    store.meta_set(INCOMPLETE_META, incomplete)


def _mark_complete(store, report: ImportReport) -> None:
    incomplete = dict(store.meta_get(INCOMPLETE_META) or {})
    if incomplete.pop(report.bundle_id, None) is not None:
        store.meta_set(INCOMPLETE_META, incomplete)


def incomplete_imports(store) -> list[dict]:
    """Bundles whose import began and did not finish, oldest first: ``{bundle_id, file, post_id,
    post_name, started_at, by}``. Part of each may be merged; importing it again completes it."""
    incomplete = store.meta_get(INCOMPLETE_META) or {}
    return sorted(({"bundle_id": bundle_id, **info} for bundle_id, info in incomplete.items()),
                  key=lambda item: str(item.get("started_at", "")))
