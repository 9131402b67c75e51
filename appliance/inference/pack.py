"""Model packs: a folder of model files described by a signed ``manifest.json``.

Layout::

    <pack>/manifest.json          what the pack holds (schema below), sha256 of every file
    <pack>/manifest.json.sig      base64 Ed25519 signature of manifest.json's exact bytes
    <pack>/<model id>/...         model files (ONNX, OpenVINO IR, classifier weights)

The manifest (``format: bccdms-pack/1``)::

    {"format": "bccdms-pack/1", "pack_id": "...", "version": "...", "created": "ISO-8601",
     "demo": bool, "signing_key": "<base64 Ed25519 public key>", "description": "...",
     "models": {"<model id>": {
         "analysis": "<analysis id>", "version": "...", "demo": bool, "architecture": "resnet152",
         "classes": ["..."],                    # exactly the catalogue's class ids, in order
         "input": {"size": 224, "resize": 256, "policy": "resize_shorter_center_crop",
                   "mean": [r, g, b], "std": [r, g, b]},
         "temperature": 1.0,                    # logits are divided by it before softmax
         "refer_below": null | float,           # calibrated top probability below which: refer
         "outputs": {"logits": "logits", "features": "features"},
         "files": {"onnx_int8": "<model id>/model.int8.onnx", ...},  # role -> relative path
         "validation": {...}, "provenance": {...}, "ood": {...} | null}},
     "files": {"<relative path>": {"sha256": "...", "size": n}}}

File roles: ``onnx_fp32``, ``onnx_int8``, ``openvino_fp32`` + ``openvino_fp32_weights``,
``openvino_int8`` + ``openvino_int8_weights`` (IR .xml + .bin), ``classifier`` (.npz with the
final layer's ``weight`` and ``bias``, for class-activation heatmaps), ``ood`` (.npz of
feature statistics for the out-of-scope gate, ``appliance.inference.ood``), and the model card
written by ``bccdms-export evaluate``: ``card`` (markdown), ``card_json``, ``figure_roc`` and
``figure_reliability`` (PNG), shown on the Admin page. A pack may hold any subset of the seven models.

Trust: a pack is accepted when its signature verifies with ``signing_key`` and that key is
one of the configured trusted keys, or when the pack is a demo pack and the box is not in
clinical mode. A demo pack is refused in clinical mode whoever signed it, even a trusted key
(a demo pack can never pass for a clinical one: ``demo`` is signed and every result it
produces says DEMO).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .. import catalogue
from ..errors import PackError
from .. import signing

PACK_FORMAT = "bccdms-pack/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
RESIZE_POLICIES = ("resize_shorter_center_crop", "resize_exact")
FILE_ROLES = ("onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_fp32_weights",
              "openvino_int8", "openvino_int8_weights", "classifier", "ood",
              "card", "card_json", "figure_roc", "figure_reliability")
_CHUNK = 1 << 20
# A manifest lists a few dozen files; anything near this size is not one (packs come from USB sticks).
MAX_MANIFEST_BYTES = 8 << 20


@dataclass(frozen=True)
class InputSpec:
    size: int
    resize: int
    policy: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ModelEntry:
    id: str
    analysis: str
    version: str
    demo: bool
    architecture: str
    classes: tuple[str, ...]
    input: InputSpec
    temperature: float
    refer_below: float | None
    outputs: dict[str, str]
    files: dict[str, str]
    validation: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] | None = None


@dataclass
class Pack:
    root: Path
    pack_id: str
    version: str
    demo: bool
    signing_key: str
    trusted: bool
    description: str
    created: str
    models: dict[str, ModelEntry]
    files: dict[str, dict[str, Any]]
    manifest: dict[str, Any]

    def path_of(self, relpath: str) -> Path:
        return self.root / relpath

    def read_verified(self, relpath: str) -> bytes:
        """The file's bytes, after checking them against the signed sha256.

        Models are loaded from these very bytes, so what runs is what was verified.
        """
        expected = self._listed(relpath)
        try:
            data = self.path_of(relpath).read_bytes()
        except OSError as exc:
            raise self._unreadable(relpath, exc) from None
        self._check(relpath, hashlib.sha256(data).hexdigest(), expected)
        return data

    def map_verified(self, relpath: str) -> mmap.mmap:
        """The verified bytes in private, page-aligned, writable memory of their own.

        Like `read_verified` (the file is read once, then checked; later changes to the file
        cannot reach it), but a runtime may later hand whole pages it no longer needs back to
        the system (`mmap.madvise`). OpenVINO does so with the IR weights, of which the
        compiled model keeps its own repacked copy (``runtimes/openvino.py``).
        """
        expected = self._listed(relpath)
        try:
            with open(self.path_of(relpath), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size == 0:                               # nothing to map, and no model either
                    self._check(relpath, hashlib.sha256(b"").hexdigest(), expected)
                    raise PackError(f"The model file {relpath} of pack {self.pack_id} is empty.",
                                    "Reinstall the pack from its original USB stick.")
                mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                got = fh.readinto(mapping)
        except OSError as exc:
            raise self._unreadable(relpath, exc) from None
        try:                                                # a file cut short while read: no match
            self._check(relpath, hashlib.sha256(mapping).hexdigest() if got == size else "", expected)
        except PackError:
            mapping.close()
            raise
        return mapping

    def _listed(self, relpath: str) -> dict[str, Any]:
        expected = self.files.get(relpath)
        if expected is None:
            raise PackError(f"The model pack {self.pack_id} does not list the file {relpath}.",
                            "Reinstall the pack from its original USB stick.")
        return expected

    def _unreadable(self, relpath: str, exc: OSError) -> PackError:
        return PackError(f"The model file {relpath} of pack {self.pack_id} cannot be read ({exc.strerror}).",
                         "Reinstall the pack from its original USB stick.")

    def _check(self, relpath: str, sha256: str, expected: dict[str, Any]) -> None:
        if sha256 != expected["sha256"]:
            raise PackError(f"The model file {relpath} of pack {self.pack_id} does not match its checksum: "
                            "it is damaged or was altered, so it will not be used.",
                            "Reinstall the pack from its original USB stick, or roll back to the previous pack.")

    def verify_all(self, roles: Iterable[str] | None = None) -> list[str]:
        """Check the sha256 of every file (or of the files with the given roles); return problems."""
        wanted = set(roles) if roles is not None else None
        paths = sorted(self.files) if wanted is None else sorted(
            {p for m in self.models.values() for r, p in m.files.items() if r in wanted})
        problems = []
        for rel in paths:
            try:
                if file_sha256(self.path_of(rel)) != self.files[rel]["sha256"]:
                    problems.append(f"{rel}: checksum does not match")
            except OSError as exc:
                problems.append(f"{rel}: {exc.strerror}")
        return problems


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe_relpath(rel: Any, pack: str) -> str:
    """Reject absolute paths, '..' and odd names: packs come from USB sticks."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise PackError(f"The model pack {pack} names a file with an invalid path.", "Do not install this pack.")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts):
        raise PackError(f"The model pack {pack} names a file outside the pack ({rel}).", "Do not install this pack.")
    return str(p)


def _bad(pack: str, what: str) -> PackError:
    return PackError(f"The model pack {pack} is not valid: {what}.",
                     "Install a pack built by bccdms-export, or ask the ML team for a new one.")


def _model_entry(model_id: str, raw: dict, pack: str, listed: dict) -> ModelEntry:
    if model_id not in catalogue.MODELS:
        raise _bad(pack, f"it holds an unknown model {model_id!r}")
    spec = catalogue.MODELS[model_id]
    try:
        classes = tuple(raw["classes"])
        inp = raw["input"]
        entry = ModelEntry(
            id=model_id,
            analysis=str(raw["analysis"]),
            version=str(raw["version"]),
            demo=bool(raw["demo"]),
            architecture=str(raw.get("architecture", "resnet152")),
            classes=classes,
            input=InputSpec(int(inp["size"]), int(inp["resize"]), str(inp["policy"]),
                            tuple(float(v) for v in inp["mean"]), tuple(float(v) for v in inp["std"])),
            temperature=float(raw.get("temperature", 1.0)),
            refer_below=None if raw.get("refer_below") is None else float(raw["refer_below"]),
            outputs=dict(raw.get("outputs") or {"logits": "logits", "features": "features"}),
            files={str(k): _safe_relpath(v, pack) for k, v in raw["files"].items()},
            validation=dict(raw.get("validation") or {}),
            provenance=dict(raw.get("provenance") or {}),
            ood=raw.get("ood"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _bad(pack, f"model {model_id} has a missing or malformed field ({exc})") from None
    if classes != spec.class_ids:
        raise _bad(pack, f"model {model_id} has classes {list(classes)}, but this software expects "
                         f"{list(spec.class_ids)}")
    if model_id not in catalogue.analysis(entry.analysis).model_ids:
        raise _bad(pack, f"model {model_id} is filed under the wrong analysis {entry.analysis!r}")
    if entry.input.policy not in RESIZE_POLICIES or entry.input.size <= 0 or entry.input.resize < entry.input.size:
        raise _bad(pack, f"model {model_id} has an invalid input description")
    if not entry.temperature > 0:
        raise _bad(pack, f"model {model_id} has a temperature that is not positive")
    for role, rel in entry.files.items():
        if role not in FILE_ROLES:
            raise _bad(pack, f"model {model_id} has a file of unknown role {role!r}")
        if rel not in listed:
            raise _bad(pack, f"the file {rel} of model {model_id} has no checksum")
    return entry


def load_pack(root: str | os.PathLike, trusted_keys: Iterable[str] = (), allow_demo: bool = True) -> Pack:
    """Read and verify a pack's manifest and signature; file checksums are checked on read."""
    root = Path(root)
    name = root.name
    manifest_path, sig_path = root / MANIFEST, root / SIGNATURE
    if not manifest_path.is_file():
        raise PackError(f"There is no model pack at {root} (no {MANIFEST}).",
                        "Build the demo pack with 'bccdms-export demo --out weights/demo', "
                        "or install a pack with 'appliance models install PATH'.")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise _bad(name, "manifest.json is far too large to be a pack manifest")
    raw_manifest = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw_manifest)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(name, "manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACK_FORMAT:
        raise _bad(name, f"manifest.json is not a {PACK_FORMAT} manifest")
    pack_id = str(manifest.get("pack_id") or name)
    key = manifest.get("signing_key")
    if not sig_path.is_file():
        raise PackError(f"The model pack {pack_id} is not signed.", "Do not use it; ask the ML team for a signed pack.")
    if not isinstance(key, str) or not signing.verify(key, raw_manifest, sig_path.read_text().strip()):
        raise PackError(f"The signature of model pack {pack_id} is wrong: the pack was altered or signed "
                        "by someone else.", "Do not use it; install the pack from its original USB stick.")
    demo = bool(manifest.get("demo"))
    trusted = key in set(trusted_keys)
    if demo and not allow_demo:
        # Whoever signed it (even a trusted key): its models are untrained.
        raise PackError(f"The model pack {pack_id} is a demo pack, and this box is set up for clinical use.",
                        "Install a trained, signed model pack.")
    if not trusted and not demo:
        raise PackError(f"The model pack {pack_id} is signed by a key this box does not trust.",
                        "Add the ML team's public key to [security] trusted_model_keys, or use another pack.")
    listed_raw = manifest.get("files")
    models_raw = manifest.get("models")
    if not isinstance(listed_raw, dict) or not isinstance(models_raw, dict) or not models_raw:
        raise _bad(pack_id, "it lists no models or no files")
    listed = {}
    for rel, info in listed_raw.items():
        rel = _safe_relpath(rel, pack_id)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise _bad(pack_id, f"the file {rel} has no sha256")
        listed[rel] = info
    models = {mid: _model_entry(mid, m, pack_id, listed) for mid, m in models_raw.items()}
    if any(m.demo for m in models.values()) and not demo:
        raise _bad(pack_id, "it holds demo models but is not marked as a demo pack")
    for rel, info in listed.items():
        path = root / rel
        if not path.is_file():
            raise PackError(f"The model pack {pack_id} is missing the file {rel}.",
                            "Reinstall the pack from its original USB stick.")
        if "size" in info and path.stat().st_size != info["size"]:
            raise PackError(f"The model file {rel} of pack {pack_id} has the wrong size: it is damaged or altered.",
                            "Reinstall the pack from its original USB stick.")
    return Pack(root=root, pack_id=pack_id, version=str(manifest.get("version", "")), demo=demo,
                signing_key=key, trusted=trusted, description=str(manifest.get("description", "")),
                created=str(manifest.get("created", "")), models=models, files=listed, manifest=manifest)


def write_manifest(root: str | os.PathLike, manifest: dict[str, Any], private_key) -> Path:
    """Fill in ``files`` (sha256 and size of every model file), sign, and write the manifest.

    ``manifest`` holds everything else (see the module docstring); ``signing_key`` is set
    from ``private_key``. Used by ``bccdms-export``; the appliance only reads packs.
    """
    root = Path(root)
    doc = dict(manifest)
    doc["format"] = PACK_FORMAT
    doc["signing_key"] = signing.public_b64(private_key)
    doc["demo"] = bool(doc.get("demo")) or any(m.get("demo") for m in doc["models"].values())
    files = {}
    for model in doc["models"].values():
        for rel in model["files"].values():
            rel = _safe_relpath(rel, root.name)
            path = root / rel
            files[rel] = {"sha256": file_sha256(path), "size": path.stat().st_size}
    doc["files"] = dict(sorted(files.items()))
    data = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    (root / MANIFEST).write_bytes(data)
    (root / SIGNATURE).write_text(signing.sign(private_key, data) + "\n")
    return root / MANIFEST
