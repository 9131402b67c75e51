"""Turn what ``device_train`` returned into a signed appliance pack (and model cards).

    .venv/bin/python -m export.recipes.assemble_pack RETURNED_DIR --key ~/bccdms-keys/packs.key \\
        --out weights/gpu-pack [--data .device_data] [--cards weights/cards]

1. checks every returned part against the sha256 in ``metrics.json`` and joins them into the
   INT8 ONNX (decompressing ``.xz`` parts), then checks the whole file's sha256;
2. converts that QDQ ONNX to OpenVINO IR with ``openvino.convert_model`` (OpenVINO reads the
   Quantize/DequantizeLinear pairs as INT8) — the GPU machine had no OpenVINO;
3. runs ONNX Runtime INT8 and OpenVINO INT8 on the validation images with the appliance's
   real preprocessing: accuracy, ROC, calibration and refer band of both, their top-1
   agreement with each other and with the GPU's FP32 network (per-image logits returned in
   ``metrics.json``), and the out-of-scope gate on OpenVINO's features;
4. writes the model folder (INT8 ONNX, INT8 IR, classifier, ``ood``, ``model.json``, model card
   with its figures) and builds the signed pack from it with ``bccdms-export pack``'s code;
5. with ``--cards``, writes ``<model>.gpu.md``/``.json`` for every model of the run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance import catalogue
from appliance.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checked(folder: Path, entry: dict) -> bytes:
    path = folder / entry["file"]
    if not path.is_file():
        raise UserError(f"{path} is missing from the returned files.", "Fetch every file the device run wrote.")
    data = path.read_bytes()
    if _sha256(data) != entry["sha256"]:
        raise UserError(f"{path} does not match the checksum in metrics.json: it was damaged on the way.",
                        "Fetch the files again.")
    return data


def join_parts(folder: Path, entry: dict) -> bytes:
    """A returned file from its checked parts (decompressed when the run had to compress it)."""
    payload = b"".join(_checked(folder, part) for part in entry["parts"])
    data = lzma.decompress(payload) if entry.get("compression") == ".xz" else payload
    if _sha256(data) != entry["sha256"]:
        raise UserError("The joined model does not match its checksum.", "Fetch every part again.")
    return data


def dequantize(data: bytes) -> dict:
    """The state dict from ``device_train.compact_weights`` (int8 per output channel → float32)."""
    import io

    import torch
    state = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for key in npz.files:
            if key.endswith("::scale"):
                continue
            if key.endswith("::int8"):
                name = key[:-len("::int8")]
                q = npz[key]
                value = q.astype(np.float32) * npz[f"{name}::scale"].reshape(-1, *([1] * (q.ndim - 1)))
            else:
                name, value = key, npz[key]
            state[name] = torch.from_numpy(np.array(value))     # a copy that keeps 0-d shapes
    return state


def read_metrics(folder: Path) -> dict:
    path = folder / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read ({exc}).", "Pass the folder the device run's files were fetched to.") \
            from None
    if metrics.get("format") != "bccdms-device-metrics/1":
        raise UserError(f"{path} is not a device_train metrics file.", "Pass the folder of a device_train run.")
    return metrics


def verify_here(model_dir: Path, meta: dict, report: dict, data_root: Path) -> dict[str, Any]:
    """ONNX Runtime and OpenVINO INT8 on the validation images, preprocessed as on the box."""
    from export.calibration import choose_refer_threshold_for_forms, refer_band
    from export.datasets import labelled_for, open_dataset, subset_of
    from export.evaluate import DEPLOYED_FORMS, form_figures, gate_section, parity, run_forms, runners, synthetic_outputs
    from export.metrics import softmax
    from export.images import batches
    from export.ood import Gate
    from export.packing import read_model_folder
    from export.progress import Progress

    split = meta["split"]
    dataset = open_dataset(data_root / split["dataset"], "manifest", "eval")
    labelled = labelled_for(dataset, meta["model_id"])
    by_file = {dataset.relpath(item): i for i, item in enumerate(labelled.items)}
    order = report["val_files"]
    missing = [f for f in order if f not in by_file]
    if missing:
        raise UserError(f"{len(missing)} validation images are not in {data_root} (first: {missing[0]}).",
                        "Pass the .device_data folder the run was made from with --data.")
    val = subset_of(labelled, [by_file[f] for f in order])
    _meta, files = read_model_folder(model_dir)
    run = runners({role: files[role] for role in ("onnx_int8", "openvino_int8")})
    say = Progress(False)
    outputs = run_forms(run, batches([i.path for i in val.items], meta["input"]), meta["input"], say)
    targets = np.asarray(val.targets)
    classes = tuple(meta["classes"])
    device_logits = {f"{name} (GPU run)": np.asarray(z, np.float32) for name, z in report["val_logits"].items()}
    agreement = parity({**outputs.logits, **device_logits}, "torch (GPU run)")
    gate = Gate.from_bytes(files["ood"].read_bytes())
    # The refer band again, now that both runtimes the box may use can be run (as evaluate does).
    t = meta["temperature"]
    refer = choose_refer_threshold_for_forms({f: softmax(outputs.logits[f], t) for f in DEPLOYED_FORMS}, targets)
    return {"images": len(targets), "refer": refer,
            "torch_refer": refer_band(softmax(device_logits["torch (GPU run)"], t), targets, refer["threshold"]),
            "forms": {name: {"parity": agreement[name],
                             "metrics": form_figures(z, targets, classes, t, refer["threshold"])}
                      for name, z in outputs.logits.items()},
            "onnxruntime_vs_openvino": parity(outputs.logits, "onnx_int8")["openvino_int8"],
            "out_of_scope_openvino": gate_section(gate, fitted=False, form="openvino_int8",
                                                  in_scope={"validation": outputs}, other={},
                                                  synthetic=synthetic_outputs(run, "openvino_int8", meta["input"]))}


def build_model_folder(returned: Path, metrics: dict, work: Path, data_root: Path, version: str | None) -> Path:
    from export.packing import FILE_NAMES, write_model_json
    from export.quantize import convert_openvino, onnx_quant_summary, openvino_quant_summary

    export = metrics.get("export") or {}
    if not export.get("files"):
        raise UserError("The device run returned no INT8 model" + (f" ({export.get('error')})" if export.get("error")
                                                                   else "") + ".",
                        "Read the run's output, fix the cause and run it again.")
    model_id = export["model"]
    result = metrics["models"][model_id]
    report = result["report"]
    folder = work / model_id
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / FILE_NAMES["onnx_int8"]).write_bytes(join_parts(returned, export["files"]["onnx_int8"]))
    for role in ("classifier", "ood"):
        (folder / FILE_NAMES[role]).write_bytes(_checked(returned, export["files"][role]))
    # convert_model reads the QDQ pairs as FakeQuantize: the IR runs the same INT8 convolutions.
    convert_openvino(folder / FILE_NAMES["onnx_int8"], folder / FILE_NAMES["openvino_int8"])
    quantization = {"onnxruntime": onnx_quant_summary(folder / FILE_NAMES["onnx_int8"]).as_dict(),
                    "openvino": openvino_quant_summary(folder / FILE_NAMES["openvino_int8"]).as_dict(),
                    "calibration": export.get("calibration")}
    split = dict(result["split"])
    split["dataset"] = str((data_root / split["dataset"]).resolve())
    meta = {"model_id": model_id, "analysis": catalogue.analysis_of_model(model_id).id,
            "architecture": metrics["arguments"]["arch"], "classes": report["classes"], "input": result["input"],
            "temperature": result["temperature"], "refer_below": result["refer_below"], "demo": False,
            "version": version or metrics["arguments"]["version"],
            "validation": {k: report["forms"]["torch"]["metrics"][k] for k in ("accuracy", "balanced_accuracy", "nll")},
            "provenance": {"kind": "trained", "trained": True, "initial_weights": "none",
                           "recipe": report["provenance"]["recipe"], "device_run": metrics["environment"],
                           "training": {k: v for k, v in result["training"].items() if k != "history"},
                           "export_check": export.get("export_check"), "exporter": export.get("exporter")},
            "split": split, "quantization": quantization,
            "ood": {"method": "ppca-mahalanobis+appearance", "format": 1, "form": "onnx_int8",
                    "false_alarm_cross_fitted": report["out_of_scope"]["false_alarm_cross_fitted"],
                    "catch_rate": report["out_of_scope"]["catch_rate"]}}
    write_model_json(folder, meta)
    return folder


def assemble(returned: Path, out: Path, key, *, data_root: Path, cards: Path | None = None,
             version: str | None = None, force: bool = False, progress: bool = True) -> Path:
    """The signed pack at ``out`` from the device run's files in ``returned`` (see the module docstring)."""
    from export.progress import Progress

    say = Progress(progress)
    metrics = read_metrics(returned)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = (metrics.get("export") or {}).get("files") or {}
    build = _assemble_from_weights if "weights" in files else _assemble_in
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.models-", dir=out.parent) as work:
        pack, report = build(Path(work), returned, out, key, metrics, data_root, version, force, say)
    if cards is not None:
        write_cards(metrics, cards, {report["model"]: report})
    return pack


def _assemble_in(work: Path, returned: Path, out: Path, key, metrics: dict, data_root: Path, version: str | None,
                 force: bool, say) -> tuple[Path, dict]:
    from export.model_card import key_figures, write_card
    from export.packing import read_model_folder, write_model_json
    from export.pipeline import build_pack

    with say.step("joining the INT8 model and converting it to OpenVINO IR"):
        folder = build_model_folder(returned, metrics, work, data_root, version)
    meta, _files = read_model_folder(folder)
    report = metrics["models"][meta["model_id"]]["report"]
    with say.step("ONNX Runtime and OpenVINO INT8 on the validation images (the box's preprocessing)"):
        here = verify_here(folder, meta, report, data_root)
    # The INT8 forms as measured here (the box's preprocessing), against the GPU run's FP32 logits.
    forms = {**report["forms"], **here["forms"]}
    forms["torch"] = {**forms["torch"], "metrics": {**forms["torch"]["metrics"], "refer": here["torch_refer"]}}
    report = {**report, "forms": forms, "refer": here["refer"], "refer_below": here["refer"]["threshold"],
              "checked_here": here}
    write_card(folder, report)
    meta["refer_below"] = report["refer_below"]
    meta["validation"]["figures"] = key_figures(report)
    write_model_json(folder, meta)
    ov = here["onnxruntime_vs_openvino"]
    say.say(f"ONNX Runtime vs OpenVINO INT8 on {here['images']} images: top-1 agreement {ov['top1_agreement']:.1%}, "
            f"max |Δlogit| {ov['max_abs_logit_diff']:.3f}")
    pack = build_pack([folder], out, key, pack_id=f"bccdms-{meta['version']}", version=meta["version"],
                      description=f"GPU-trained {meta['model_id']} (from scratch, sample data): see its model card",
                      include_fp32=False, force=force, progress=say.enabled)
    return pack, report


def _assemble_from_weights(work: Path, returned: Path, out: Path, key, metrics: dict, data_root: Path,
                           version: str | None, force: bool, say) -> tuple[Path, dict]:
    """The device could not make the INT8 ONNX: the returned weights go through this machine's
    pipeline (export → quantize → evaluate with the refer band and gate fitted → pack)."""
    from export.checkpoint import FORMAT
    from export.torchio import save_atomic
    from export.evaluate import evaluate
    from export.pipeline import build_pack, export_checkpoint, quantize_model_folder

    export = metrics["export"]
    model_id = export["model"]
    result = metrics["models"][model_id]
    device_report = result["report"]
    split = dict(result["split"])
    dataset_dir = data_root / split["dataset"]
    split["dataset"] = str(dataset_dir.resolve())
    checkpoint = work / "checkpoint.pt"
    save_atomic({"format": FORMAT, "model_id": model_id, "analysis": catalogue.analysis_of_model(model_id).id,
                 "architecture": metrics["arguments"]["arch"], "classes": device_report["classes"],
                 "input": result["input"], "state_dict": dequantize(join_parts(returned, export["files"]["weights"])),
                 "temperature": result["temperature"],
                 "validation": {k: device_report["forms"]["torch"]["metrics"][k]
                                for k in ("accuracy", "balanced_accuracy", "nll")},
                 "split": split,
                 "provenance": {"kind": "trained", "trained": True, "initial_weights": "none",
                                "recipe": device_report["provenance"]["recipe"], "device_run": metrics["environment"],
                                "weights": "returned as int8 per output channel (the GPU machine could not make "
                                           "the INT8 ONNX: " + str(export.get("error")) + ")"},
                 "training": {"best_epoch": result["training"]["best_epoch"]}}, checkpoint)
    with say.step("exporting and quantizing the returned weights"):
        folder = export_checkpoint(checkpoint, work / model_id, version=version or metrics["arguments"]["version"],
                                   progress=False)
        quantize_model_folder(folder, progress=False)
    others = [str(p) for p in sorted(data_root.iterdir()) if (p / "manifest.csv").is_file() and p != dataset_dir]
    report = evaluate(folder, checkpoint=checkpoint, data=str(dataset_dir), subset="eval", ood_data=others,
                      progress=say.enabled, commands=device_report.get("commands"))
    report["device_run"] = {"forms": device_report["forms"], "out_of_scope": device_report.get("out_of_scope")}
    pack = build_pack([folder], out, key, pack_id=f"bccdms-{version or metrics['arguments']['version']}",
                      version=version or metrics["arguments"]["version"],
                      description=f"GPU-trained {model_id} (from scratch, sample data): see its model card",
                      include_fp32=False, force=force, progress=say.enabled)
    return pack, report


def write_cards(metrics: dict, cards: Path, replaced: dict[str, dict]) -> list[Path]:
    """``<model>.gpu.md``/``.json`` for every model of the run (figures stay in the packs: no PNG in git)."""
    from export.model_card import card_markdown, key_figures
    cards.mkdir(parents=True, exist_ok=True)
    written = []
    for model_id, result in metrics["models"].items():
        if "report" not in result:
            continue
        report = replaced.get(model_id, result["report"])
        text = card_markdown(report, figures=False)
        (cards / f"{model_id}.gpu.md").write_text(text)
        doc = {"format": "bccdms-model-card/1", "key_figures": key_figures(report),
               "training": result["training"], "environment": metrics["environment"],
               "report": {k: v for k, v in report.items() if k != "val_logits"}}
        (cards / f"{model_id}.gpu.json").write_text(json.dumps(doc, indent=1) + "\n")
        written += [cards / f"{model_id}.gpu.md", cards / f"{model_id}.gpu.json"]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.recipes.assemble_pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("returned", type=Path, help="the folder holding the files the device run wrote")
    parser.add_argument("--key", required=True, type=Path, help="pack signing key ('bccdms-export keygen')")
    parser.add_argument("--out", required=True, type=Path, help="pack folder to write")
    parser.add_argument("--data", type=Path, default=REPO / ".device_data",
                        help="the .device_data folder the run was made from (for the checks here)")
    parser.add_argument("--cards", type=Path, help="also write <model>.gpu.md/.json cards here (e.g. weights/cards)")
    parser.add_argument("--version", help="model and pack version (default: the run's)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from appliance import signing
    from appliance.cli import run_reporting_errors

    def work() -> int:
        assemble(args.returned, args.out, signing.read_private_key(args.key), data_root=args.data, cards=args.cards,
                 version=args.version, force=args.force, progress=not args.quiet)
        print(args.out)
        return 0
    return run_reporting_errors("assemble_pack", work, "the ML team")


if __name__ == "__main__":
    sys.exit(main())
