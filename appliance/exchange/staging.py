"""Unpack a bundle's decrypted payload into a private staging folder, trusting nothing.

Every member is checked before a byte of it is written: only plain files, only the names
``layout`` allows (so no absolute paths, no ``..``, no links, no devices, no sparse files),
no duplicates, no more bytes than the limits and the free disk allow. Compressed records
are expanded under a ratio and size cap (a decompression bomb stops at the cap). At the end
the manifest must list exactly the members found, with matching sha256 and sizes, and must
repeat what the signed header says (post, bundle, kind, range).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import layout
from .container import BundleRefused, Envelope

_COPY = 1 << 20
MIN_FREE = 256 << 20          # keep this much disk free for the store itself
MAX_MANIFEST = 64 << 20
MAX_RECORD_LINE = 8 << 20     # one JSON record per line; none is anywhere near this big


@dataclass(frozen=True)
class Limits:
    max_expanded: int                       # bytes the whole payload may expand to
    max_ratio: int = 100                    # records compress ~10x; far beyond that is a bomb
    min_cap: int = 64 << 20                 # ...but small files may always expand this far
    max_members: int = 2_000_000


@dataclass
class Staged:
    root: Path
    manifest: dict
    members: dict[str, Path] = field(default_factory=dict)
    records: dict[str, Path] = field(default_factory=dict)    # kind -> expanded JSON lines

    def images(self) -> list[tuple[str, Path]]:
        return [(name, path) for name, path in self.members.items() if name.startswith("images/")]


def _unsafe_path(name: str) -> bool:
    if not name or "\\" in name or "\x00" in name:
        return True
    path = PurePosixPath(name)
    return path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/"))


class _Budget:
    def __init__(self, env: Envelope, root: Path, limits: Limits):
        self.env = env
        self.left = limits.max_expanded
        free = shutil.disk_usage(root).free - MIN_FREE
        self.disk_left = free

    def take(self, size: int, what: str) -> None:
        if size > self.left:
            raise _refused(self.env, f"it expands beyond the import limit at {what} (a decompression bomb?)",
                           "Do not import it; if the post really has this much data, raise "
                           "[exchange] max_import_mb.")
        if size > self.disk_left:
            raise BundleRefused(f"There is not enough free disk space to import {self.env.path.name}.",
                                "Free some space on this box (nothing was changed), then import again.")
        self.left -= size
        self.disk_left -= size


def _refused(env: Envelope, what: str, hint: str = "Do not import it; ask the health post to export again.") \
        -> BundleRefused:
    return BundleRefused(f"The bundle {env.path.name} was refused: {what}.", hint)


def _check_member(env: Envelope, member: tarfile.TarInfo, seen) -> None:
    name = member.name
    if member.issym() or member.islnk():
        raise _refused(env, f"it holds a link ({name!r} -> {member.linkname!r}), which could point outside the import folder")
    if member.issparse():
        raise _refused(env, f"it holds a sparse file ({name!r}), which could expand far beyond its size")
    if not member.isreg():
        raise _refused(env, f"it holds {name!r}, which is not a plain file (a device, folder or pipe)")
    if _unsafe_path(name):
        raise _refused(env, f"it holds a file with an unsafe path ({name!r}) that would land outside the import folder")
    if not layout.is_known_member(name):
        raise _refused(env, f"it holds an unexpected file ({name!r})")
    if name in seen:
        raise _refused(env, f"it holds the file {name!r} twice")


def _copy(env: Envelope, src, dest: Path, size: int) -> str:
    h = hashlib.sha256()
    left = size
    with open(dest, "xb") as out:
        while left:
            block = src.read(min(_COPY, left))
            if not block:
                raise _refused(env, "its content ends in the middle of a file")
            h.update(block)
            out.write(block)
            left -= len(block)
    return h.hexdigest()


def _expand(env: Envelope, compressed: Path, dest: Path, budget: _Budget, limits: Limits) -> None:
    cap = max(limits.min_cap, compressed.stat().st_size * limits.max_ratio)
    written = 0
    try:
        with gzip.open(compressed, "rb") as src, open(dest, "xb") as out:
            while block := src.read(_COPY):
                written += len(block)
                if written > cap:
                    raise _refused(env, f"{compressed.name} expands more than {limits.max_ratio} times "
                                        "(a decompression bomb)")
                budget.take(len(block), compressed.name)
                out.write(block)
    except (OSError, EOFError, zlib.error):
        raise _refused(env, f"{compressed.name} is not valid compressed data") from None


def stage_payload(env: Envelope, payload, root: Path, limits: Limits) -> Staged:
    """Read the tar stream ``payload`` into ``root`` and check it against its manifest."""
    budget = _Budget(env, root, limits)
    found: dict[str, tuple[Path, str, int]] = {}
    try:
        with tarfile.open(fileobj=payload, mode="r|") as tar:
            for member in tar:
                _check_member(env, member, found)
                if len(found) >= limits.max_members:
                    raise _refused(env, "it holds too many files")
                budget.take(member.size, member.name)
                dest = root / member.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest = _copy(env, tar.extractfile(member), dest, member.size)
                found[member.name] = (dest, digest, member.size)
    except tarfile.TarError as exc:
        raise _refused(env, f"its content is not a valid archive ({exc})") from None
    staged = Staged(root, _manifest(env, found))
    for name, (path, _, _) in found.items():
        if name != layout.MANIFEST:
            staged.members[name] = path
    _check_images(env, staged)
    for name, kind in layout.RECORD_MEMBERS.items():
        if name in staged.members:
            expanded = root / f"{kind}.jsonl"
            _expand(env, staged.members[name], expanded, budget, limits)
            staged.records[kind] = expanded
    return staged


def _manifest(env: Envelope, found: dict[str, tuple[Path, str, int]]) -> dict:
    if layout.MANIFEST not in found:
        raise _refused(env, "it has no manifest (it is incomplete)")
    path, _, size = found[layout.MANIFEST]
    if size > MAX_MANIFEST:
        raise _refused(env, "its manifest is too large")
    try:
        manifest = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError):
        raise _refused(env, "its manifest is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != layout.MANIFEST_FORMAT:
        raise _refused(env, "its manifest is of an unknown format")
    for key in ("bundle_id", "post_id", "kind", "seq_from", "seq_to"):
        if manifest.get(key) != env.header.get(key):
            raise _refused(env, f"its manifest and its signed header disagree about {key}")
    listed = manifest.get("members")
    if not isinstance(listed, dict):
        raise _refused(env, "its manifest lists no files")
    present = set(found) - {layout.MANIFEST}
    if set(listed) != present:
        missing = sorted(set(listed) - present)[:3]
        extra = sorted(present - set(listed))[:3]
        raise _refused(env, f"its files do not match its manifest (missing {missing}, not listed {extra})")
    for name in present:
        entry = listed[name]
        _, digest, size = found[name]
        if not isinstance(entry, dict) or entry.get("sha256") != digest or entry.get("size") != size:
            raise _refused(env, f"the file {name} does not match its checksum in the manifest")
    return manifest


def _check_images(env: Envelope, staged: Staged) -> None:
    """In an identified bundle an image is named by its sha256: the name must be the content's."""
    if env.header.get("kind") != layout.KIND_RECORDS:
        return
    listed = staged.manifest["members"]
    for name, _ in staged.images():
        _, _, stem, _ = layout.parse_image_member(name)
        if listed[name]["sha256"] != stem:
            raise _refused(env, f"the image {name} does not match its name")
