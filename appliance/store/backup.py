"""``appliance backup --to DIR`` and ``appliance restore FROM``.

A backup is a folder ``bccdms-backup-<post>-<UTC time>/`` with ``manifest.json`` (sha256 and
size of every file, schema version, post id). A folder, not a tar: USB sticks are often FAT32,
which cannot hold a file over 4 GB, and images grow past that.

Consistent while the server runs: under the writer lock every record file is hard-linked into a
snapshot folder (milliseconds; record files are only ever replaced, never changed in place, so a
link is a frozen copy), then the lock is released and the snapshot is copied at leisure.
Images are content-addressed and never change, so they are copied directly. The manifest is
written last and the folder renamed from ``.partial`` only when everything is on the stick.

The box's keys (``keys/``: the post's signing key, the pseudonym secret, a supervisor's private
key) are left out by default: a lost stick must not let anyone forge bundles, re-identify
research exports or open bundles. ``passphrase`` seals them into the backup (``keys.sealed``,
see :mod:`appliance.store.sealed_keys`); restore asks for it and writes them back readable by
the owner only.

Restore verifies every checksum (and opens the sealed keys) before touching anything, refuses
to replace a store that has records unless forced, copies into a staging folder, then switches
folder by folder; a marker file lets the next start finish a switch a power cut interrupted.
What it replaces is kept aside under ``replaced-<UTC time>/``, never deleted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import re
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from ..config import Config
from ..errors import StoreError, UserError
from ..fsutil import write_secret
from . import durable, sealed_keys
from .durable import fsync_dir, is_tmp_name, os_error, utc_stamp
from .fields import utc_now
from .locking import InstanceLock
from .migrations import SCHEMA_VERSION

MANIFEST = "manifest.json"
FORMAT = 1
STAGING = "restore-staging"
COMPLETE = "COMPLETE"
KEYS = "keys"
# Never backed up as they are: derived (library, thumbs, index cache), re-installable (packs),
# this module's and the store's own working files, and the keys (only ever sealed).
_SKIP_TOP = {"packs", "library", "thumbs", "store.seq", "store.lock", STAGING, "store.migrating", "artifacts", KEYS}
_KEY_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
_SKIP_PREFIX = (".snapshot-", "replaced-", "store.incomplete-", "bccdms-backup-")


def _skipped_top(name: str) -> bool:
    return name in _SKIP_TOP or name.startswith(_SKIP_PREFIX) or is_tmp_name(name)


def _skipped_store_file(rel: Path) -> bool:
    name = rel.name
    return (rel.parts[0] == "index" or name.endswith(durable.PREV_SUFFIX) or durable.DAMAGED_MARK in name
            or is_tmp_name(name))


def _walk(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` (relative paths), in a stable order."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))     # .incoming: files being written
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(root)


def _copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(1024 * 1024):
            digest.update(block)
            dst.write(block)
            size += len(block)
    return digest.hexdigest(), size


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


# --- backup --------------------------------------------------------------------------------

def _key_files(data_dir: Path) -> dict[str, bytes]:
    """The files of the keys folder (name -> bytes), without temporary files."""
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(os.scandir(data_dir / KEYS), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False) and not is_tmp_name(entry.name) and _KEY_NAME.match(entry.name):
                found[entry.name] = Path(entry.path).read_bytes()
    return found


def backup(store: Any, to_dir: Path, *, passphrase: str | None = None) -> Path:
    """Write a backup folder of an open ``Store`` into ``to_dir``; with ``passphrase`` the keys go in
    too, sealed."""
    data_dir, core = store.data_dir, store.core
    sealed = None
    if passphrase is not None:
        sealed_keys.check_passphrase(passphrase)
        try:
            keys = _key_files(data_dir)
        except OSError as exc:
            raise os_error(exc, data_dir / KEYS, "read the keys") from None
        if not keys:
            raise UserError(f"There are no keys in {data_dir / KEYS} to back up.",
                            "Make the backup without --with-keys.")
        sealed = sealed_keys.seal(keys, passphrase)
    stamp = utc_stamp()
    final = to_dir / f"bccdms-backup-{store.post_id}-{stamp}"
    partial = final.with_name(final.name + ".partial")
    snapshot = data_dir / f".snapshot-{os.getpid()}-{stamp}"
    try:
        to_dir.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as exc:
        raise os_error(exc, to_dir, "start the backup") from None
    files: dict[str, dict] = {}
    try:
        with core.writing(defer=False):
            seq = core.seq
            for rel in _walk(store.dir):
                if not _skipped_store_file(rel):
                    (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.link(store.dir / rel, snapshot / rel)
        for rel in _walk(snapshot):
            files[f"store/{rel.as_posix()}"] = _entry(*_copy_hashed(snapshot / rel, partial / "store" / rel))
        for entry in sorted(os.scandir(data_dir), key=lambda e: e.name):
            if entry.name == "store" or _skipped_top(entry.name) or _inside(Path(entry.path), to_dir):
                continue
            source = Path(entry.path)
            rels = [Path()] if entry.is_file(follow_symlinks=False) else list(_walk(source))
            for rel in rels:
                name = Path(entry.name) / rel
                files[name.as_posix()] = _entry(*_copy_hashed(data_dir / name, partial / name))
        if sealed is not None:
            write_secret(partial / sealed_keys.FILE_NAME, sealed)
            files[sealed_keys.FILE_NAME] = _entry(*_hash(partial / sealed_keys.FILE_NAME))
        os.sync()    # one sync for thousands of images instead of one fsync each
        manifest = {"format": FORMAT, "kind": "bccdms-backup", "post_id": store.post_id,
                    "post_name": store.post_name, "created_at": utc_now(), "change_seq": seq,
                    "schema_version": store.meta_get("schema_version"),
                    "keys": "sealed" if sealed is not None else "not included", "files": files}
        durable.write_fsynced(partial / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode())
        fsync_dir(partial)
        os.replace(partial, final)
        fsync_dir(to_dir)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise os_error(exc, getattr(exc, "filename", None) or to_dir, "write the backup") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    return final


def _entry(sha256: str, size: int) -> dict:
    return {"sha256": sha256, "size": size}


def _inside(path: Path, folder: Path) -> bool:
    try:
        folder.resolve().relative_to(path.resolve())
        return True
    except ValueError:
        return False


# --- restore -------------------------------------------------------------------------------

def read_manifest(source: Path) -> tuple[Path, dict]:
    folder = source.parent if source.name == MANIFEST else source
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise UserError(f"{source} is not a backup (it has no {MANIFEST}).",
                        "Give the folder that 'appliance backup' made, named bccdms-backup-….") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"The backup's {MANIFEST} in {folder} cannot be read ({exc}).",
                        "The backup is damaged; use another one.") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "bccdms-backup" or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{folder} is not a backup this appliance can read.", "Use a backup made by 'appliance backup'.")
    return folder, manifest


def verify(folder: Path, manifest: dict) -> None:
    version = manifest.get("schema_version") or SCHEMA_VERSION
    if int(version) > SCHEMA_VERSION:
        raise UserError(f"The backup was made by a newer version of the appliance (format {version}).",
                        "Install that version first.")
    for rel, want in manifest["files"].items():
        path = folder / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise UserError(f"The backup lists a file outside itself ({rel}).", "The backup is damaged; use another one.")
        try:
            got = _hash(path)
        except OSError:
            raise UserError(f"The backup is incomplete: {rel} is missing.", "Use another backup.") from None
        if got != (want.get("sha256"), want.get("size")):
            raise UserError(f"The backup is damaged: {rel} does not match its checksum.", "Use another backup.")


def _has_records(data_dir: Path) -> bool:
    store = data_dir / "store"
    for kind in ("users", "patients", "exams"):
        with contextlib.suppress(FileNotFoundError):
            if any(True for _ in _walk(store / kind)):
                return True
    return (data_dir / "db.json").exists()


def _open_keys(folder: Path, manifest: dict, passphrase, without_keys: bool) -> dict[str, bytes] | None:
    """The keys sealed in the backup (None when it holds none, or they are not wanted)."""
    if without_keys or sealed_keys.FILE_NAME not in manifest["files"]:
        return None
    if callable(passphrase):
        passphrase = passphrase()
    if not passphrase:
        raise UserError("This backup holds the box's keys, sealed with a passphrase.",
                        "Give the passphrase, or restore the records without the keys (--without-keys).")
    try:
        blob = (folder / sealed_keys.FILE_NAME).read_bytes()
    except OSError as exc:
        raise UserError(f"The sealed keys in {folder} cannot be read ({exc.strerror}).", "Use another backup.") from None
    keys = sealed_keys.unseal(blob, passphrase)
    if any(not _KEY_NAME.match(name) for name in keys):
        raise UserError("The sealed keys in this backup name a file outside the keys folder.",
                        "The backup is damaged; use another one.")
    return keys


def restore(source: Path, cfg: Config, *, open_store: Callable[[Config], ContextManager[Any]], force: bool = False,
            passphrase: str | Callable[[], str] | None = None, without_keys: bool = False) -> dict:
    """Replace the records with a backup. A backup with sealed keys needs ``passphrase`` (text, or a
    function asked only then) unless ``without_keys``; the keys then replace the box's keys.
    ``open_store`` (``Store.open``) opens the restored records, which rebuilds their indexes."""
    data_dir = Path(cfg.data_dir)
    folder, manifest = read_manifest(source)
    verify(folder, manifest)
    keys = _open_keys(folder, manifest, passphrase, without_keys)
    data_dir.mkdir(parents=True, exist_ok=True)
    finish_interrupted_restore(data_dir)
    instance = InstanceLock(data_dir / "store.lock")
    if not instance.try_exclusive():
        raise UserError("The appliance is using the records right now, so they cannot be replaced.",
                        "Stop the appliance first (sudo systemctl stop bccdms), then restore again.")
    try:
        if _has_records(data_dir) and not force:
            raise UserError(f"This box already has records in {data_dir}.",
                            "Restoring replaces them (they are kept aside, not deleted): run restore again with "
                            "--force if that is what you want.")
        staging = data_dir / STAGING
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for rel, want in manifest["files"].items():
                top = Path(rel).parts[0]
                if rel == sealed_keys.FILE_NAME or (top == KEYS and without_keys):
                    continue
                if _copy_hashed(folder / rel, staging / rel) != (want["sha256"], want["size"]):
                    raise UserError(f"The backup changed while it was read: {rel}.", "Try again.")
                if top == KEYS:            # a backup made before keys were sealed: owner only now
                    os.chmod(staging / rel, 0o600)
            for name, data in (keys or {}).items():
                write_secret(staging / KEYS / name, data)
            if (staging / KEYS).is_dir():
                os.chmod(staging / KEYS, 0o700)
            os.sync()
            durable.write_fsynced(staging / COMPLETE, b"restore ready to switch\n")
            fsync_dir(staging)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise os_error(exc, data_dir, "restore the backup") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        kept = _switch(data_dir)
    finally:
        instance.release()
    with open_store(cfg) as store:       # rebuilds indexes and the class folders of the library
        store.images.reconcile()
        counts = {"users": store.users.count(), "patients": len(store.patients.index.by_uuid),
                  "exams": len(store.exams.index.by_uuid)}
    had_keys = sealed_keys.FILE_NAME in manifest["files"] or any(Path(r).parts[0] == KEYS for r in manifest["files"])
    return {"restored_from": str(folder), "post_id": manifest.get("post_id"), "created_at": manifest.get("created_at"),
            "files": len(manifest["files"]), "kept_aside": str(kept) if kept else None,
            "keys": ("left out" if without_keys else "restored") if had_keys else "not in the backup", **counts}


def _switch(data_dir: Path) -> Path | None:
    """Move the staged backup into place, keeping what it replaces. Safe to run again."""
    staging = data_dir / STAGING
    aside = data_dir / f"replaced-{utc_stamp()}"
    moved_aside = False
    for entry in sorted(os.scandir(staging), key=lambda e: e.name):
        name = entry.name
        if name in (COMPLETE, "images"):
            continue
        current = data_dir / name
        if current.exists() or current.is_symlink():
            aside.mkdir(exist_ok=True)
            os.replace(current, aside / name)
            moved_aside = True
        os.replace(entry.path, current)
    images = staging / "images"
    if images.exists():
        for rel in _walk(images):
            target = data_dir / "images" / rel
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(images / rel, target)
    if (data_dir / "store" / "index").exists():
        shutil.rmtree(data_dir / "store" / "index", ignore_errors=True)
    fsync_dir(data_dir)
    (staging / COMPLETE).unlink()
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(data_dir)
    return aside if moved_aside else None


def finish_interrupted_restore(data_dir: Path) -> None:
    """Finish a restore a power cut interrupted after its copy was complete; drop an incomplete copy."""
    staging = data_dir / STAGING
    if not staging.exists():
        return
    try:
        if (staging / COMPLETE).exists():
            _switch(data_dir)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise StoreError(f"A restore was interrupted and cannot be finished ({exc.strerror}).",
                         f"Ask the technician; the restored copy is in {staging}.") from None
