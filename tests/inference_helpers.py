"""Helpers for the inference tests: variants of the real tiny pack (tests/conftest.py
`tiny_pack`), re-signed like bccdms-export would, without rebuilding any network.

- `clone_pack` links the model files (cheap) and copies the manifest, so a test can alter
  one file or the manifest without touching the session's pack.
- `reseal` edits the manifest and signs it again (file checksums recomputed).
- `bias_heads` gives chosen models a classifier that always answers a chosen class, by
  swapping the float head of the real INT8 graphs (the export code's own head swap), so the
  cascade's branches can be driven through real models.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from appliance import catalogue, signing
from appliance.inference.pack import MANIFEST, SIGNATURE, write_manifest

ORIGINAL_IMAGE = "breakhis/originals/ductal_carcinoma/SOB_M_DC-14-10926-100-001.png"


def cli_box(tmp_path: Path, monkeypatch, pack_key, config: str = "") -> list[str]:
    """``appliance`` command-line options for a box of its own: a config file that trusts the test
    key (plus ``config``), a data folder under ``tmp_path``, and no BCCDMS_* overrides."""
    for key in [k for k in os.environ if k.startswith("BCCDMS_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "config.toml"
    path.write_text(f'[security]\ntrusted_model_keys = ["{signing.public_b64(pack_key)}"]\n' + config)
    return ["--config", str(path), "--data-dir", str(tmp_path / "data")]


def clone_pack(src: Path, dst: Path) -> Path:
    """A copy of pack ``src`` at ``dst`` whose model files are symlinks to the originals."""
    dst.mkdir(parents=True)
    for item in src.rglob("*"):
        target = dst / item.relative_to(src)
        if item.is_dir():
            target.mkdir(exist_ok=True)
        elif item.name in (MANIFEST, SIGNATURE):
            shutil.copy2(item, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(item.resolve())
    return dst


def own_copy(path: Path) -> Path:
    """Replace a symlinked file by a real copy (before changing its bytes)."""
    if path.is_symlink():
        real = path.resolve()
        path.unlink()
        shutil.copy2(real, path)
    return path


def manifest_of(pack: Path) -> dict:
    return json.loads((pack / MANIFEST).read_text())


def reseal(pack: Path, key, edit: Callable[[dict], None] | None = None) -> Path:
    """Edit the manifest (in place, by ``edit``) and sign it again with ``key``."""
    manifest = manifest_of(pack)
    manifest.pop("files", None)
    if edit is not None:
        edit(manifest)
    write_manifest(pack, manifest, key)
    return pack


def sign_raw(pack: Path, key, manifest: dict) -> None:
    """Write ``manifest`` exactly as given (files included) and sign it: for manifests that
    write_manifest itself would refuse to produce."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    (pack / MANIFEST).write_bytes(data)
    (pack / SIGNATURE).write_text(signing.sign(key, data) + "\n")


def bias_heads(pack: Path, key, answers: dict[str, str], strength: float = 12.0) -> Path:
    """Make each model in ``answers`` always predict its class (zero weights, one-hot bias),
    in its INT8 ONNX and INT8 IR; drops its FP32 files, then re-signs the pack."""
    import onnx
    import openvino as ov

    from export.heads import set_onnx_head, set_openvino_head

    core = ov.Core()
    for model_id, class_id in answers.items():
        classes = catalogue.model(model_id).class_ids
        bias = np.full(len(classes), -strength / 2, np.float32)
        bias[classes.index(class_id)] = strength / 2
        folder = pack / model_id
        weight = np.zeros((len(classes), np.load(folder / "classifier.npz")["weight"].shape[1]), np.float32)
        model = onnx.load(str(folder / "model.int8.onnx"))
        set_onnx_head(model, weight, bias)
        (folder / "model.int8.onnx").unlink()
        onnx.save_model(model, str(folder / "model.int8.onnx"))
        ir = core.read_model(str(folder / "model.int8.xml"))
        set_openvino_head(ir, weight, bias)
        for name in ("model.int8.xml", "model.int8.bin"):
            (folder / name).unlink()
        ov.save_model(ir, str(folder / "model.int8.xml"), compress_to_fp16=False)
        (folder / "classifier.npz").unlink()
        with open(folder / "classifier.npz", "wb") as fh:
            np.savez(fh, weight=weight, bias=bias)

    def drop_fp32(manifest: dict) -> None:
        for model_id in answers:
            files = manifest["models"][model_id]["files"]
            for role in [r for r in files if "fp32" in r]:
                del files[role]

    return reseal(pack, key, drop_fp32)


def make_demo_pack(src: Path, dst: Path) -> Path:
    """Pack ``src`` re-signed as a demo pack by a throw-away key, as `bccdms-export demo` does."""
    pack = clone_pack(src, dst)

    def make_demo(manifest: dict) -> None:
        manifest["demo"], manifest["pack_id"] = True, "demo"
        for entry in manifest["models"].values():
            entry["demo"], entry["version"] = True, entry["version"] + "-demo"
    return reseal(pack, signing.new_private_key(), make_demo)


def trusting(cfg, key):
    """``cfg`` with the public key of ``key`` among the trusted model-pack keys."""
    cfg.security.trusted_model_keys = [signing.public_b64(key)]
    return cfg
