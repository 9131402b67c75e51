"""The steps after training: checkpoint → model folder (ONNX FP32) → INT8 (both runtimes) → pack.

Model folder (``--out`` of ``export``; files named as in ``packing.FILE_NAMES``)::

    model.json          the manifest entry's metadata + split + checks (written by export, updated by quantize)
    model.fp32.onnx     logits + features, dynamic batch, opset 18
    classifier.npz      the final layer, for class-activation heatmaps
    model.int8.onnx     ONNX Runtime static INT8 (QDQ, per-channel, U8S8)       ← quantize
    model.fp32.xml/bin  OpenVINO IR FP32                                         ← quantize
    model.int8.xml/bin  OpenVINO IR INT8 (NNCF)                                  ← quantize
"""
from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path
from typing import Any

from appliance import catalogue, signing
from appliance.errors import UserError
from appliance.inference.pack import file_sha256

from .datasets import labelled_for, open_dataset, sample_paths
from .images import load_batch, recorded_split_paths, synthetic_batch
from .packing import (FILE_NAMES, model_entry, read_model_folder, refuse_used_folder, save_classifier, seal_pack,
                      staged_folder, write_model_json)
from .progress import Progress, quiet_libraries

CHECK_IMAGES = 8


def default_version() -> str:
    """Model and pack versions default to the build date (sortable, and says how old a model is)."""
    return _dt.date.today().strftime("%Y.%m.%d")


# ---------------------------------------------------------------- export

def export_checkpoint(checkpoint: Path, out: Path, *, version: str | None = None, force: bool = False,
                      progress: bool = True) -> Path:
    """Checkpoint → model folder with ONNX FP32 + classifier + model.json; checks the export."""
    from .checkpoint import load_checkpoint, network_from_checkpoint
    from .onnx_export import check_onnx, export_onnx

    say = Progress(progress)
    ckpt = load_checkpoint(checkpoint)
    out = Path(out)
    refuse_used_folder(out, force)
    out.mkdir(parents=True, exist_ok=True)
    net = network_from_checkpoint(ckpt)
    spec = ckpt["input"]
    paths = recorded_split_paths(ckpt.get("split"), "val")[:CHECK_IMAGES]
    images = load_batch(paths, spec) if paths else synthetic_batch(ckpt["model_id"], spec, CHECK_IMAGES)
    with say.step(f"exporting {ckpt['model_id']} to ONNX FP32"), quiet_libraries(progress):
        onnx_path = export_onnx(net, out / FILE_NAMES["onnx_fp32"], int(spec["size"]))
        check = check_onnx(onnx_path, net, images)
    say.say(f"onnx.checker passed; ONNX Runtime vs torch on {len(images)} "
            f"{'validation' if paths else 'synthetic'} images: max |Δlogit| {check.max_abs_logit_diff:.2e}, "
            f"top-1 agreement {check.top1_agreement:.0%}, features {check.features_shape}")
    if check.max_abs_logit_diff > 1e-2 or check.top1_agreement < 1:
        raise RuntimeError(f"the ONNX export does not match torch (max |Δlogit| {check.max_abs_logit_diff})")
    save_classifier(out / FILE_NAMES["classifier"], net.fc.weight.detach().numpy(), net.fc.bias.detach().numpy())
    provenance = dict(ckpt.get("provenance") or {})
    provenance["checkpoint"] = {"file": Path(checkpoint).name, "sha256": file_sha256(Path(checkpoint)),
                                "best_epoch": (ckpt.get("training") or {}).get("best_epoch")}
    meta = {"model_id": ckpt["model_id"], "analysis": catalogue.analysis_of_model(ckpt["model_id"]).id,
            "architecture": ckpt["architecture"], "classes": list(ckpt["classes"]), "input": spec,
            "temperature": float(ckpt["temperature"]), "refer_below": None, "demo": False,
            "version": version or default_version(), "validation": ckpt.get("validation") or {},
            "provenance": provenance, "split": ckpt.get("split"),
            "export_check": {**check.as_dict(), "images": "validation" if paths else "synthetic"}}
    write_model_json(out, meta)
    return out


# ---------------------------------------------------------------- quantize

def calibration_paths(meta: dict[str, Any], data: str | None, layout: str, subset: str | None,
                      count: int, seed: int) -> tuple[list[Path], str]:
    """Training images to calibrate on: the recorded training split when the dataset is the
    one trained on (or none is given and it is still there), else this dataset's images of the model."""
    split_doc = meta.get("split")
    if data is None:
        paths = recorded_split_paths(split_doc, "train")
        if not paths:
            raise UserError("Quantization needs calibration images, and the training images recorded in "
                            "model.json are not available here.", "Pass a folder of training images with --data.")
        return sample_paths(paths, count, seed), f"training split of {split_doc['dataset']}"
    dataset = open_dataset(data, layout, subset)
    labelled = labelled_for(dataset, meta["model_id"])
    items = labelled.items
    if split_doc and Path(split_doc["dataset"]) == dataset.root:
        train_files = set(split_doc["train"]["files"])
        items = [i for i in items if dataset.relpath(i) in train_files] or items
        source = f"training split of {dataset.root}"
    else:
        source = str(dataset.root)
    return sample_paths([i.path for i in items], count, seed), source


def quantize_model_folder(folder: Path, *, data: str | None = None, layout: str = "auto",
                          subset: str | None = None, calibration_images: int = 128, seed: int = 0,
                          runtimes: tuple[str, ...] = ("onnxruntime", "openvino"),
                          progress: bool = True) -> dict[str, Any]:
    """ONNX Runtime INT8 + OpenVINO IR FP32/INT8 for a model folder; returns the quantization summary."""
    from .quantize import convert_openvino, quantize_onnx_int8, quantize_openvino_int8

    say = Progress(progress)
    folder = Path(folder)
    meta, files = read_model_folder(folder)
    if "onnx_fp32" not in files:
        raise UserError(f"{folder} has no {FILE_NAMES['onnx_fp32']}.", "Run 'bccdms-export export' first.")
    if calibration_images < 1:
        raise UserError("--calibration-images must be at least 1.", "Use e.g. 128.")
    paths, source = calibration_paths(meta, data, layout, subset, calibration_images, seed)
    with say.step(f"preprocessing {len(paths)} calibration images from {source}"):
        calibration = load_batch(paths, meta["input"])
    summary: dict[str, Any] = {"calibration": {"images": len(paths), "source": source}}
    if "onnxruntime" in runtimes:
        with say.step("ONNX Runtime static INT8 (QDQ, per-channel, U8S8)"):
            result = quantize_onnx_int8(files["onnx_fp32"], folder / FILE_NAMES["onnx_int8"], calibration, say)
        summary["onnxruntime"] = result.as_dict()
        _report(say, result)
    if "openvino" in runtimes:
        with say.step("OpenVINO IR FP32 and NNCF INT8"):
            convert_openvino(files["onnx_fp32"], folder / FILE_NAMES["openvino_fp32"])
            result = quantize_openvino_int8(folder / FILE_NAMES["openvino_fp32"], folder / FILE_NAMES["openvino_int8"],
                                            calibration, say)
        summary["openvino"] = result.as_dict()
        _report(say, result)
    meta["quantization"] = summary
    write_model_json(folder, meta)
    return summary


def _report(say: Progress, result) -> None:
    say.say(str(result))
    if not result.all_convolutions_quantized:
        say.say(f"WARNING: {result.convolutions - result.quantized_convolutions} convolutions stay in float "
                "and will run slowly; check the quantization settings.")


# ---------------------------------------------------------------- pack

def build_pack(model_folders: list[Path], out: Path, private_key, *, pack_id: str | None = None,
               version: str | None = None, description: str = "", include_fp32: bool = True,
               force: bool = False, progress: bool = True, recommended: bool = False,
               override: str | None = None) -> Path:
    """Copy model folders into a new pack folder, write and sign its manifest, verify it.

    A model folder's champion/challenger comparison (``compare``) goes into the manifest and the
    cards; ``recommended``: refuse models that fail the promotion rule unless ``override`` says why
    (``comparison_record.pack_comparison``)."""
    from .comparison_record import card_text, pack_comparison
    say = Progress(progress)
    out = Path(out)
    refuse_used_folder(out, force)
    if not model_folders:
        raise UserError("No model folders were given.", "Pass the folders written by 'bccdms-export export'.")
    version = version or default_version()
    read = [(Path(f), *read_model_folder(Path(f))) for f in model_folders]
    seen: dict[str, Path] = {}
    for folder, meta, files in read:
        if meta["model_id"] in seen:
            raise UserError(f"{folder} and {seen[meta['model_id']]} both hold {meta['model_id']}.",
                            "Put one folder per model in a pack.")
        seen[meta["model_id"]] = folder
        if meta.get("demo"):
            raise UserError(f"{folder} holds a demo model.", "Build demo packs with 'bccdms-export demo'.")
        expected = catalogue.model(meta["model_id"]).class_ids
        if tuple(meta.get("classes") or ()) != expected:
            raise UserError(f"{folder} was trained for the classes {meta.get('classes')}, but this software's "
                            f"{meta['model_id']} has {list(expected)}.", "Retrain the model with this version.")
    metas = {meta["model_id"]: meta for _folder, meta, _files in read}
    pack_comparison({m: {} for m in metas}, metas, recommended, override)    # refuse before copying gigabytes
    with staged_folder(out, force) as staging:
        entries = {}
        for folder, meta, files in say.bar(read, desc="copying models", unit="model"):
            model_id = meta["model_id"]
            roles = [r for r in files if include_fp32 or r not in ("onnx_fp32", "openvino_fp32", "openvino_fp32_weights")]
            (staging / model_id).mkdir()
            for role in roles:
                shutil.copy2(files[role], staging / model_id / FILE_NAMES[role])
            provenance = {**meta.get("provenance", {}), "export_check": meta.get("export_check"),
                          "quantization": meta.get("quantization")}
            entries[model_id] = model_entry(
                model_id, version=meta.get("version") or version, demo=False, architecture=meta["architecture"],
                input_spec=meta["input"], files={r: f"{model_id}/{FILE_NAMES[r]}" for r in roles},
                temperature=meta["temperature"], refer_below=meta.get("refer_below"),
                validation=meta.get("validation"), provenance=provenance, ood=meta.get("ood"))
        comparison = pack_comparison(entries, metas, recommended, override)
        for model_id, entry in entries.items():
            card = entry["files"].get("card")
            text = card_text(staging / card, metas, model_id, comparison and comparison["override"]) if card else None
            if text is not None:
                (staging / card).write_text(text)
        with say.step("signing the manifest and reading the pack back"):
            seal_pack(staging, entries, private_key, pack_id=pack_id or f"bccdms-{version}", version=version,
                      description=description, demo=False, comparison=comparison)
    say.say(f"pack with {', '.join(sorted(entries))} written to {out}; "
            f"signed by {signing.public_b64(private_key)}")
    if comparison is not None:
        say.say("champion/challenger: " + ("recommended" if comparison["recommended"] else "NOT recommended")
                + (f" (against the rule; reason: {comparison['override']})" if comparison["override"] else ""))
    return out
