"""Installed model packs: install from a USB stick, list, roll back.

Layout under ``<data>/packs`` (see docs/ARCHITECTURE.md, "Model packs")::

    <pack_id>/            an installed, verified pack
    current -> <pack_id>  the pack the engine uses (a relative symlink)
    previous -> <pack_id> the pack before it, kept for ``rollback``
    .lock                 one install or rollback at a time (CLI and kiosk may both try)

Installing never touches the running pack until the new one is proven good: the pack is
verified where it lies (signature, trust, demo-in-clinical-mode, every sha256), copied to
``<pack_id>.tmp`` with every file fsynced, verified again from the copy (a stick that returns
different bytes on the second read is caught), renamed into place, and only then are the
``previous`` and ``current`` links switched, each by an atomic ``rename`` of a new symlink.
A power cut at any moment leaves either the old pack or the new one current, never a mix.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import catalogue
from .catalogue import N_
from .config import Config
from .errors import PackError, UserError
from .i18n import TranslatableError
from .inference.pack import MANIFEST, SIGNATURE, Pack, load_pack
from .store.durable import fsync_dir

CURRENT = "current"
PREVIOUS = "previous"
_LOCK = ".lock"
_TMP_SUFFIX = ".tmp"
_RESERVED = {CURRENT, PREVIOUS, _LOCK}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Room left on the data disk after a pack is copied: records and images must still fit.
RESERVE_BYTES = 200 * 1024 * 1024
SERVICE = "bccdms.service"
# Where on a stick packs are looked for: the stick itself and two folder levels below it.
SEARCH_DEPTH = 2

# Stages reported to ``progress(stage, done, total)`` (English; the kiosk translates them).
CHECKING = N_("Checking the pack on the USB stick")
COPYING = N_("Copying the pack")
CHECKING_COPY = N_("Checking the copy")
SWITCHING = N_("Switching to the new pack")
Progress = Callable[[str, int, int], None]

# The champion/challenger comparison a pack carries (``bccdms-export compare``), in a nurse's words.
# ``PackInfo.comparison_lines(gettext)`` fills them in; the CLI prints them in English, the kiosk
# translates them.
CASES_EXPERT = N_("Checked on %(cases)s expert-confirmed cases from %(posts)s health posts:")
CASES_CONFIRMED = N_("Checked on %(cases)s confirmed cases from %(posts)s health posts:")
FOUND = N_("%(analysis)s: %(what)s found %(before)s → %(after)s, false alarms %(alarms_before)s → %(alarms_after)s")
NOT_RECOMMENDED = N_("Not recommended: the ML team's check found this pack no better than the one in use.")
OVERRIDDEN = N_("Recommended by the ML team although its check failed. Their reason: %(reason)s")
CONFIRM = N_("Install it only if the ML team told you to.")


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class PackInfo:
    """What ``models list`` and the Admin panel show about one pack."""
    pack_id: str
    version: str
    demo: bool
    trusted: bool
    created: str
    description: str
    models: tuple[tuple[str, str], ...]      # (model id, model version)
    size_bytes: int
    role: str                                # current | previous | installed | built-in | usb
    path: Path
    problem: str | None = None               # why the pack cannot be used now, if it cannot
    # The manifest's champion/challenger verdict (``bccdms-export compare``, ``pack``); None for a
    # pack that was not compared with one in use (a first pack, the demo pack).
    comparison: dict[str, Any] | None = None

    @property
    def recommended(self) -> bool:
        return self.comparison is None or bool(self.comparison.get("recommended"))

    @property
    def needs_confirmation(self) -> bool:
        """The ML team's rule did not recommend this pack: an admin must confirm its install."""
        return not self.recommended

    def comparison_lines(self, gettext: Callable[[str], str] = lambda text: text) -> list[str]:
        """The comparison in a nurse's words ("... abnormal found 91 % → 94 %, false alarms 12 % → 10 %")."""
        c = self.comparison
        if not c:
            return []
        sources = c.get("label_sources") or {}
        head = CASES_EXPERT if sources and set(sources) == {"expert"} else CASES_CONFIRMED
        lines = [gettext(head) % {"cases": f"{int(c.get('cases') or 0):,}", "posts": int(c.get("posts") or 0)}]
        for model_id, m in sorted((c.get("models") or {}).items()):
            if m.get("sensitivity_champion") is None or model_id not in catalogue.MODELS:
                continue
            spec = catalogue.MODELS[model_id]
            positives = m.get("positive_classes") or []
            what = spec.class_name(positives[0]) if len(positives) == 1 else N_("Abnormal")
            analysis = catalogue.ANALYSES.get(m.get("analysis"))
            title = analysis.name if analysis else model_id
            lines.append(gettext(FOUND) % {
                "analysis": gettext(title), "what": gettext(what),
                "before": _pct(m.get("sensitivity_champion")), "after": _pct(m.get("sensitivity_challenger")),
                "alarms_before": _pct(m.get("false_alarm_champion")),
                "alarms_after": _pct(m.get("false_alarm_challenger"))})
        if c.get("override"):
            lines.append(gettext(OVERRIDDEN) % {"reason": c["override"]})
        elif not c.get("recommended"):
            lines += [gettext(NOT_RECOMMENDED), gettext(CONFIRM)]
        return lines

    @property
    def manifest_key(self) -> str:
        """Same id and version: the same pack (as far as a person choosing one can tell)."""
        return f"{self.pack_id} {self.version}"

    def to_json(self) -> dict:
        return {"pack_id": self.pack_id, "version": self.version, "demo": self.demo,
                "trusted": self.trusted, "created": self.created, "description": self.description,
                "models": dict(self.models), "size_bytes": self.size_bytes, "role": self.role,
                "path": str(self.path), "problem": self.problem, "comparison": self.comparison,
                "recommended": self.recommended, "comparison_lines": self.comparison_lines()}


def _pct(value) -> str:
    return "–" if not isinstance(value, (int, float)) else f"{round(100 * value)} %"


def _comparison(raw) -> dict[str, Any] | None:
    """The manifest's comparison when it has the shape the pages read (it is signed, but old or odd
    packs must not break the Admin page)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("recommended"), bool):
        return None
    if not isinstance(raw.get("models", {}), dict):
        return None
    return raw


def _info(pack: Pack, role: str) -> PackInfo:
    size = sum(int(f.get("size", 0)) for f in pack.files.values())
    return PackInfo(pack.pack_id, pack.version, pack.demo, pack.trusted, pack.created, pack.description,
                    tuple((m.id, m.version) for m in pack.models.values()), size, role, pack.root,
                    comparison=_comparison(pack.manifest.get("comparison")))


class PackManager:
    """Installs, lists and rolls back the model packs of one data folder."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.root = cfg.packs_dir

    # -- reading ---------------------------------------------------------------------------
    def load(self, path: Path) -> Pack:
        """Load a pack with this box's trust rules (trusted keys; no demo pack in clinical mode)."""
        return load_pack(path, self.cfg.security.trusted_model_keys, allow_demo=not self.cfg.clinical)

    def _link_target(self, name: str) -> Path | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        return (self.root / os.readlink(link)).resolve()

    def current_path(self) -> Path | None:
        return self._link_target(CURRENT)

    def current(self) -> Pack | None:
        """The current pack, verified (signature and trust); None when none is installed."""
        path = self.current_path()
        return self.load(path) if path is not None else None

    def is_installed(self) -> bool:
        """True when a current pack exists and passes this box's signature and trust rules."""
        try:
            return self.current() is not None
        except UserError:
            return False

    def list(self) -> list[PackInfo]:
        """Installed packs (current first, then previous, then others), and the built-in demo pack."""
        roles = {}
        for name in (CURRENT, PREVIOUS):
            target = self._link_target(name)
            if target is not None:
                roles.setdefault(target, name)
        found: list[PackInfo] = []
        dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()
                      and p.name not in _RESERVED and not p.name.endswith(_TMP_SUFFIX)) if self.root.is_dir() else []
        for path in dirs:
            role = roles.get(path.resolve(), "installed")
            found.append(self.describe(path, role))
        demo_dir = self.cfg.demo_pack_dir
        if (demo_dir / MANIFEST).is_file():
            found.append(self.describe(demo_dir, "built-in"))
        order = {CURRENT: 0, PREVIOUS: 1, "installed": 2, "built-in": 3}
        return sorted(found, key=lambda p: order[p.role])

    def describe(self, path: Path, role: str) -> PackInfo:
        """What is known of the pack at ``path`` without hashing it (signature and trust only)."""
        try:
            return _info(self.load(path), role)
        except UserError as exc:
            return PackInfo(path.name, "", False, False, "", "", (), 0, role, path, problem=exc.message)

    # -- changing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError("Another model-pack installation is running.",
                                "Wait until it has finished, then try again.") from None
            yield
        finally:
            os.close(fd)

    def install(self, source: str | os.PathLike, progress: Progress = _no_progress, *,
                confirmed_not_recommended: bool = False) -> PackInfo:
        """Verify the pack at ``source``, copy it in, and make it current. Returns the new current.

        A pack the ML team's promotion rule did not recommend (its manifest's ``comparison``) is
        refused unless ``confirmed_not_recommended``: an admin saw the comparison and confirmed."""
        source = Path(source)
        if not source.exists():
            raise UserError(f"There is no model pack at {source}.",
                            "Check the path: a pack is the folder that holds manifest.json.")
        if source.is_file() and source.name == MANIFEST:
            source = source.parent
        progress(CHECKING, 0, 0)
        incoming = self.load(source)
        if _info(incoming, "usb").needs_confirmation and not confirmed_not_recommended:
            raise NotRecommended(incoming.pack_id)
        _verify_files(incoming)
        pack_id = incoming.pack_id
        if not _SAFE_ID.match(pack_id) or pack_id in _RESERVED or pack_id.endswith(_TMP_SUFFIX):
            raise PackError(f"The model pack has an id this box cannot use as a folder name ({pack_id!r}).",
                            "Ask the ML team to rebuild it with a plain id (letters, digits, '.', '_', '-').")
        with self._locked():
            dest = self.root / pack_id
            current = self.current_path()
            if dest.is_dir() and _same_manifest(dest, source):
                if current == dest.resolve():
                    return _info(self.load(dest), CURRENT)
                # Reinstalling the previous pack: the copy on disk is re-checked, not re-copied.
                _verify_files(self.load(dest))
            else:
                if dest.exists() and dest.resolve() in {current, self._link_target(PREVIOUS)}:
                    raise PackError(f"A different pack with the same id {pack_id} is already installed.",
                                    "Ask the ML team to give every pack its own id (for example with its version).")
                self._copy_in(incoming, dest, progress)
            progress(SWITCHING, 0, 0)
            self._switch(dest, previous=current)
            self._prune()
            return _info(self.load(dest), CURRENT)

    def rollback(self, progress: Progress = _no_progress) -> PackInfo:
        """Make the previous pack current again (and the current one previous)."""
        with self._locked():
            previous, current = self._link_target(PREVIOUS), self.current_path()
            if previous is None or not previous.is_dir():
                raise UserError("There is no previous model pack to roll back to.",
                                "Install a pack with 'appliance models install PATH'.")
            progress(CHECKING_COPY, 0, 0)
            pack = self.load(previous)
            _verify_files(pack)
            progress(SWITCHING, 0, 0)
            self._switch(previous, previous=current)
            return _info(pack, CURRENT)

    def _copy_in(self, incoming: Pack, dest: Path, progress: Progress) -> None:
        needed = sum(int(f.get("size", 0)) for f in incoming.files.values())
        free = shutil.disk_usage(self.root).free
        if needed + RESERVE_BYTES > free:
            raise UserError(f"There is not enough free space for the model pack: it needs "
                            f"{_mb(needed)} MB and {_mb(free)} MB are free.",
                            "Roll back or remove old exports to free space, then try again.")
        tmp = self.root / (incoming.pack_id + _TMP_SUFFIX)
        _remove_tree(tmp)
        try:
            tmp.mkdir(mode=0o755)
            # Only what the signed manifest lists is copied: nothing else from the stick comes in.
            names = [MANIFEST, SIGNATURE, *sorted(incoming.files)]
            for done, rel in enumerate(names):
                progress(COPYING, done, len(names))
                _copy_file(incoming.root / rel, tmp / rel)
            fsync_dir(tmp)
            progress(CHECKING_COPY, 0, 0)
            copied = self.load(tmp)
            if copied.manifest != incoming.manifest:
                raise PackError("The model pack changed while it was being copied.",
                                "Leave the USB stick in place and try again.")
            _verify_files(copied)
            self._chown_like_root(tmp)
            if dest.exists():
                _remove_tree(dest)
            os.rename(tmp, dest)
            fsync_dir(self.root)
        except BaseException:
            _remove_tree(tmp)
            raise

    def _switch(self, new: Path, previous: Path | None) -> None:
        # previous first: a power cut between the two renames leaves current as it was.
        if previous is not None and previous != new.resolve():
            _replace_symlink(self.root, PREVIOUS, previous.name)
        elif self._link_target(PREVIOUS) == new.resolve():
            os.unlink(self.root / PREVIOUS)     # never "previous" and "current" the same pack
        _replace_symlink(self.root, CURRENT, new.name)
        self._chown_like_root(self.root / CURRENT, self.root / PREVIOUS)
        fsync_dir(self.root)

    def _prune(self) -> None:
        """Remove installed packs that are neither current nor previous (SD cards are small)."""
        keep = {self.current_path(), self._link_target(PREVIOUS)}
        for path in self.root.iterdir():
            if path.is_dir() and not path.is_symlink() and path.name not in _RESERVED \
                    and path.resolve() not in keep:
                _remove_tree(path)

    def _chown_like_root(self, *paths: Path) -> None:
        """Run as root (a technician with sudo), give new files to the data folder's owner."""
        if os.geteuid() != 0:
            return
        st = self.cfg.data_dir.stat()
        if st.st_uid == 0:
            return
        for path in paths:
            if not os.path.lexists(path):
                continue
            os.lchown(path, st.st_uid, st.st_gid)
            if path.is_dir() and not path.is_symlink():
                for dirpath, dirnames, filenames in os.walk(path):
                    for name in dirnames + filenames:
                        os.lchown(os.path.join(dirpath, name), st.st_uid, st.st_gid)


class NotRecommended(TranslatableError):
    """The pack failed the ML team's champion/challenger rule and no admin confirmed it."""

    def __init__(self, pack_id: str):
        super().__init__(N_("The model pack %(pack)s is not recommended: the ML team's check found it no better "
                            "than the pack in use."),
                         N_("Install it only if the ML team told you to, and confirm that you want it."), pack=pack_id)
        self.pack_id = pack_id


def packs_on(drive: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders on a USB stick that hold a pack manifest (the stick itself and below, never deep)."""
    found, level = [], [drive]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            if (folder / MANIFEST).is_file():
                found.append(folder)
                continue
            try:
                below += sorted(Path(e.path) for e in os.scandir(folder)
                                if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
            except OSError:
                continue
        level = below
    return found


def _verify_files(pack: Pack) -> None:
    problems = pack.verify_all()
    if problems:
        listed = "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        raise PackError(f"The model pack {pack.pack_id} has damaged or altered files: {listed}.",
                        "Do not use it; copy the pack again from the ML team's original.")


def _same_manifest(a: Path, b: Path) -> bool:
    try:
        return (a / MANIFEST).read_bytes() == (b / MANIFEST).read_bytes()
    except OSError:
        return False


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dst, 0o644)


def _replace_symlink(root: Path, name: str, target: str) -> None:
    tmp = root / f".{name}.new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, root / name)


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _mb(n: int) -> int:
    return round(n / (1024 * 1024))


def signal_running_server() -> bool:
    """Ask the systemd-managed server to reload its models (SIGHUP); True when it was asked.

    The kiosk reloads in-process; this is for ``appliance models install`` run beside a
    running service. It works when the CLI runs as the service's user (the installed
    ``appliance`` wrapper does that) or as root.
    """
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    try:
        out = subprocess.run([systemctl, "show", "--property=MainPID", "--value", SERVICE],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        pid = int(out or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return False
    return True
