"""Model packs as ``bccdms-export`` writes them (the format is ``appliance.inference.pack``).

A *model folder* is what ``export`` and ``quantize`` leave for one model: the files below
under their standard names, plus ``model.json`` (the manifest entry without ``files``).
``seal_pack`` writes the signed manifest of a pack folder and reads it back through the
appliance's own ``load_pack``, so a pack that leaves this module is one the box accepts.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from appliance import catalogue, signing
from appliance.errors import UserError
from appliance.inference.pack import load_pack, write_manifest

# File role → file name inside a model folder and inside the pack's <model id>/ folder.
FILE_NAMES = {
    "onnx_fp32": "model.fp32.onnx",
    "onnx_int8": "model.int8.onnx",
    "openvino_fp32": "model.fp32.xml",
    "openvino_fp32_weights": "model.fp32.bin",
    "openvino_int8": "model.int8.xml",
    "openvino_int8_weights": "model.int8.bin",
    "classifier": "classifier.npz",
    # Written by ``evaluate`` (see export/evaluate.py): out-of-scope statistics and the model card.
    "ood": "ood.npz",
    "card": "model_card.md",
    "card_json": "model_card.json",
    "figure_roc": "roc.png",
    "figure_reliability": "reliability.png",
}
MODEL_JSON = "model.json"
# A pack must let the box run the model on at least one runtime and draw its heatmap.
REQUIRED_ANY = (("onnx_int8", "onnx_fp32", "openvino_int8", "openvino_fp32"),)
REQUIRED_ALL = ("classifier",)


def refuse_used_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise UserError(f"{out} already exists and is not empty.",
                        "Choose another --out folder, or pass --force to replace it.")


@contextlib.contextmanager
def staged_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """An empty folder beside ``out`` to build in; when the block succeeds it replaces ``out``.

    A half-built pack never sits at ``out``, and a failed build leaves ``out`` as it was.
    ``staging.parent`` is a private scratch folder, removed afterwards.
    """
    out = Path(out)
    refuse_used_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.build-", dir=out.parent) as tmp:
        staging = Path(tmp) / "staging"
        staging.mkdir()
        yield staging
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(staging, out)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("bccdms")
    except PackageNotFoundError:
        return "0.0.0"


def model_entry(model_id: str, *, version: str, demo: bool, architecture: str, input_spec: dict,
                files: dict[str, str], temperature: float = 1.0, refer_below: float | None = None,
                validation: dict | None = None, provenance: dict | None = None,
                ood: dict | None = None) -> dict[str, Any]:
    """A manifest ``models`` entry; classes and analysis come from the catalogue."""
    spec = catalogue.model(model_id)
    return {
        "analysis": catalogue.analysis_of_model(model_id).id,
        "version": version,
        "demo": bool(demo),
        "architecture": architecture,
        "classes": list(spec.class_ids),
        "input": dict(input_spec),
        "temperature": float(temperature),
        "refer_below": refer_below,
        "outputs": {"logits": "logits", "features": "features"},
        "files": dict(files),
        "validation": validation or {},
        "provenance": provenance or {},
        "ood": ood,
    }


def save_classifier(path: Path, weight: np.ndarray, bias: np.ndarray) -> Path:
    """The final layer (``weight`` C×F, ``bias`` C) for the appliance's class-activation maps."""
    path = Path(path)
    with open(path, "wb") as fh:   # np.savez would append ".npz" to a name without it
        np.savez(fh, weight=np.asarray(weight, np.float32), bias=np.asarray(bias, np.float32))
    return path


def seal_pack(root: Path, models: dict[str, dict], private_key, *, pack_id: str, version: str,
              description: str = "", demo: bool = False, comparison: dict | None = None) -> Path:
    """Write and sign ``manifest.json`` for the model files already in ``root``, then verify it.

    ``comparison``: the champion/challenger verdict the post shows (``comparison_record.py``)."""
    root = Path(root)
    for model_id, entry in models.items():
        missing = [r for r in REQUIRED_ALL if r not in entry["files"]]
        if missing or not any(r in entry["files"] for r in REQUIRED_ANY[0]):
            raise UserError(f"The model {model_id} lacks {', '.join(missing) or 'a model file'}.",
                            "Run 'bccdms-export export' and 'bccdms-export quantize' for it first.")
    manifest = {"pack_id": pack_id, "version": version, "created": utc_now(), "demo": bool(demo),
                "description": description, "models": models}
    if comparison is not None:
        manifest["comparison"] = comparison
    path = write_manifest(root, manifest, private_key)
    # Read it back as the box will: signature, catalogue classes, every file present and sized.
    pack = load_pack(root, trusted_keys=[signing.public_b64(private_key)], allow_demo=True)
    problems = pack.verify_all()
    if problems:
        raise RuntimeError(f"the pack just written does not verify: {problems}")
    return path


def read_model_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The metadata of a model folder and its files by role (only those present).

    A model folder is what ``export``/``quantize`` write (metadata in ``model.json``), or a
    model's folder inside a pack (metadata from the pack's ``manifest.json``).
    """
    folder = Path(folder)
    meta_path = folder / MODEL_JSON
    if not meta_path.is_file():
        return _pack_model_folder(folder)
    meta = _read_json(meta_path)
    missing = [k for k in ("model_id", "architecture", "classes", "input", "temperature") if k not in meta]
    if missing:
        raise UserError(f"{meta_path} lacks {', '.join(missing)}.", "Run 'bccdms-export export' again.")
    files = {role: folder / name for role, name in FILE_NAMES.items() if (folder / name).is_file()}
    return meta, files


def _pack_model_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    manifest_path = folder.parent / "manifest.json"
    entry = None
    if manifest_path.is_file():
        entry = (_read_json(manifest_path).get("models") or {}).get(folder.name)
    if not isinstance(entry, dict):
        raise UserError(f"{folder} is not a model folder (it has no {MODEL_JSON}, and is not a model of a pack).",
                        "Pass the --out folder of 'bccdms-export export', or PACK/<model id>.")
    meta = {**entry, "model_id": folder.name}
    files = {role: folder.parent / rel for role, rel in entry.get("files", {}).items()
             if (folder.parent / rel).is_file()}
    return meta, files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path} is damaged (not valid JSON).", "Build it again.") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} is damaged (not a JSON object).", "Build it again.")
    return doc


def write_model_json(folder: Path, meta: dict[str, Any]) -> Path:
    path = Path(folder) / MODEL_JSON
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path
