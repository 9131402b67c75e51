"""train → export → quantize (both runtimes) → evaluate → pack, on a handful of real BreakHis
images with the tiny ResNet; and the user errors of each step."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from appliance import signing
from appliance.errors import PackError, UserError
from appliance.inference.pack import load_pack
from export.cli import main

IMAGES_PER_PATIENT = 5


def _small_breakhis(datasets: Path, out: Path) -> Path:
    """A manifest of 5 images from each of 3 benign and 3 malignant patients (real files, absolute paths)."""
    rows = list(csv.DictReader(open(datasets / "breakhis" / "manifest.csv")))
    chosen: dict[str, list[dict]] = {}
    for group in ("benign", "malignant"):
        patients = sorted({r["patient"] for r in rows if r["group"] == group and r["split"] == "eval"})[:3]
        for p in patients:
            chosen[p] = [r for r in rows if r["patient"] == p and r["split"] == "eval"][:IMAGES_PER_PATIENT]
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "manifest.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "split", "label", "group", "patient"])
        writer.writeheader()
        for group_rows in chosen.values():
            for r in group_rows:
                writer.writerow({"file": str(datasets / "breakhis" / r["file"]), "split": "eval", "label": r["label"],
                                 "group": r["group"], "patient": r["patient"]})
    return csv_path


@pytest.fixture(scope="module")
def run(tmp_path_factory, datasets):
    """One tiny training run, exported, quantized and packed (about 30 s on 2 busy cores)."""
    from export.pipeline import build_pack, export_checkpoint, quantize_model_folder
    from export.train import TrainOptions, train
    base = tmp_path_factory.mktemp("pipeline")
    data = _small_breakhis(datasets, base / "data")
    checkpoint = train(TrainOptions(model_id="breast_binary", data=str(data), out=str(base / "run"), arch="tiny",
                                    image_size=64, epochs=1, batch_size=8, workers=0, val_fraction=0.34),
                       progress=False)
    model_dir = export_checkpoint(checkpoint, base / "models" / "breast_binary", version="1.2.3", progress=False)
    quantize_model_folder(model_dir, data=str(data), calibration_images=12, progress=False)
    key = signing.new_private_key()
    pack = build_pack([model_dir], base / "pack", key, pack_id="test-pack", version="1.2.3", progress=False)
    return {"base": base, "data": data, "checkpoint": checkpoint, "model_dir": model_dir, "pack": pack, "key": key}


def test_checkpoint_records_classes_temperature_validation_and_a_patient_split(run):
    import torch
    ckpt = torch.load(run["checkpoint"], weights_only=True)
    assert ckpt["model_id"] == "breast_binary" and ckpt["classes"] == ["benign", "malignant"]
    assert ckpt["input"]["size"] == 64 and ckpt["input"]["policy"] == "resize_shorter_center_crop"
    assert ckpt["temperature"] > 0
    v = ckpt["validation"]
    assert v["images"] == len(ckpt["split"]["val"]["files"]) and 0 <= v["accuracy"] <= 1
    assert sum(map(sum, v["confusion"]["matrix"])) == v["images"]
    assert ckpt["split"]["method"] == "patient"
    assert not set(ckpt["split"]["train"]["patients"]) & set(ckpt["split"]["val"]["patients"])
    assert ckpt["provenance"]["initial_weights"] == "none" and ckpt["training"]["best_epoch"] == 1
    assert json.loads((run["checkpoint"].parent / "split.json").read_text()) == ckpt["split"]


def test_exported_onnx_has_logits_and_features(run):
    import onnxruntime as ort
    session = ort.InferenceSession(str(run["model_dir"] / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    logits, features = session.run(None, {"input": np.zeros((3, 3, 64, 64), np.float32)})
    assert logits.shape == (3, 2) and features.shape == (3, 256, 2, 2)
    meta = json.loads((run["model_dir"] / "model.json").read_text())
    assert meta["export_check"]["max_abs_logit_diff"] < 1e-3 and meta["export_check"]["images"] == "validation"


def test_quantization_leaves_no_convolution_in_float(run):
    meta = json.loads((run["model_dir"] / "model.json").read_text())
    q = meta["quantization"]
    for runtime in ("onnxruntime", "openvino"):
        assert q[runtime]["convolutions"] == 17 and q[runtime]["quantized_convolutions"] == 17
    assert q["calibration"]["images"] == 12 and "training split" in q["calibration"]["source"]
    from export.quantize import onnx_quant_summary
    ops = onnx_quant_summary(run["model_dir"] / "model.int8.onnx").ops
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0


def test_pack_is_signed_verified_and_carries_the_training_metadata(run):
    pack = load_pack(run["pack"], trusted_keys=[signing.public_b64(run["key"])], allow_demo=False)
    assert pack.pack_id == "test-pack" and not pack.demo and set(pack.models) == {"breast_binary"}
    entry = pack.models["breast_binary"]
    assert entry.version == "1.2.3" and entry.architecture == "tiny" and not entry.demo
    assert entry.validation["accuracy"] is not None and entry.provenance["trained"] is True
    assert entry.provenance["checkpoint"]["sha256"]
    assert entry.provenance["quantization"]["onnxruntime"]["quantized_convolutions"] == 17
    assert set(entry.files) == {"onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_fp32_weights",
                                "openvino_int8", "openvino_int8_weights", "classifier"}
    assert pack.verify_all() == []
    import torch
    ckpt = torch.load(run["checkpoint"], weights_only=True)
    assert entry.temperature == pytest.approx(ckpt["temperature"])



def test_a_flipped_byte_in_a_built_pack_is_refused(run, tmp_path):
    import shutil
    copy = tmp_path / "pack"
    shutil.copytree(run["pack"], copy)
    pack = load_pack(copy, trusted_keys=[signing.public_b64(run["key"])], allow_demo=False)
    rel = pack.models["breast_binary"].files["onnx_int8"]
    data = bytearray((copy / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / rel).write_bytes(bytes(data))
    with pytest.raises(PackError, match="checksum"):
        pack.read_verified(rel)


def test_evaluate_reports_parity_and_accuracy_for_every_form(run, capsys):
    json_path = run["base"] / "report.json"
    code = main(["evaluate", str(run["model_dir"]), "--checkpoint", str(run["checkpoint"]), "--data", str(run["data"]),
                 "--json", str(json_path), "--quiet"])
    assert code == 0
    report = json.loads(json_path.read_text())
    assert report["reference"] == "torch" and report["split"] == "val"
    assert set(report["forms"]) == {"torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"}
    assert report["forms"]["onnx_fp32"]["parity"]["max_abs_logit_diff"] < 1e-3
    assert report["forms"]["onnx_fp32"]["parity"]["top1_agreement"] == 1.0
    for form in ("onnx_int8", "openvino_int8"):
        assert report["forms"][form]["parity"]["max_abs_logit_diff"] < 1.0
        assert report["forms"][form]["metrics"]["images"] == report["images"]
    out = capsys.readouterr().out
    assert "openvino_int8" in out and "confusion" in out


def test_evaluate_reads_a_model_inside_a_pack(run):
    from export.evaluate import evaluate
    report = evaluate(run["pack"] / "breast_binary", data=str(run["data"]), split_side="all", progress=False)
    rows = sum(1 for _ in open(run["data"])) - 1
    assert report["reference"] == "onnx_fp32" and report["split"] == "all" and report["images"] == rows


def test_training_resumes_from_its_last_epoch(run, tmp_path):
    import shutil
    import torch
    from export.train import TrainOptions, train
    out = tmp_path / "resumed"
    shutil.copytree(run["checkpoint"].parent, out)
    opts = TrainOptions(model_id="breast_binary", data=str(run["data"]), out=str(out), arch="tiny", image_size=64,
                        epochs=2, batch_size=8, workers=0, val_fraction=0.34, resume=True)
    train(opts, progress=False)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert [h["epoch"] for h in ckpt["training"]["history"]] == [1, 2]
    opts.image_size = 96
    with pytest.raises(UserError, match="image-size"):
        train(opts, progress=False)


# ---------------------------------------------------------------- user errors

def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("bccdms-export: ")
    return err


def test_train_on_a_missing_dataset_folder(capsys, tmp_path):
    err = _error(capsys, ["train", "--model", "breast_binary", "--data", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "run"), "--arch", "tiny", "--quiet"])
    assert "does not exist" in err and "--data" in err
    assert not (tmp_path / "run").exists()


def test_train_refuses_to_overwrite_a_run(capsys, run):
    err = _error(capsys, ["train", "--model", "breast_binary", "--data", str(run["data"]), "--out",
                          str(run["checkpoint"].parent), "--arch", "tiny", "--quiet"])
    assert "--resume" in err and "--force" in err


def test_train_with_a_missing_weights_file(capsys, run, tmp_path):
    err = _error(capsys, ["train", "--model", "breast_binary", "--data", str(run["data"]), "--out", str(tmp_path / "r"),
                          "--weights", str(tmp_path / "resnet152.pth"), "--epochs", "1", "--quiet"])
    assert "does not exist" in err


def test_a_frozen_backbone_needs_trained_weights(capsys, run, tmp_path):
    err = _error(capsys, ["train", "--model", "breast_binary", "--data", str(run["data"]), "--out", str(tmp_path / "r"),
                          "--weights", "none", "--freeze-backbone", "--quiet"])
    assert "--freeze-backbone needs a trained backbone" in err
    assert not (tmp_path / "r").exists()


def test_export_of_a_file_that_is_not_a_checkpoint(capsys, tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    err = _error(capsys, ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "m"), "--quiet"])
    assert "not a readable checkpoint" in err
    assert not (tmp_path / "m").exists()


def test_export_into_a_used_folder_is_refused(capsys, run):
    before = sorted(p.name for p in run["model_dir"].iterdir())
    err = _error(capsys, ["export", "--checkpoint", str(run["checkpoint"]), "--out", str(run["model_dir"]), "--quiet"])
    assert "not empty" in err
    assert sorted(p.name for p in run["model_dir"].iterdir()) == before


def test_quantize_a_folder_that_is_not_a_model(capsys, tmp_path):
    err = _error(capsys, ["quantize", str(tmp_path), "--quiet"])
    assert "not a model folder" in err


def test_pack_with_a_wrong_key_file(capsys, run, tmp_path):
    key = tmp_path / "key"
    key.write_text("this is not a key\n")
    err = _error(capsys, ["pack", str(run["model_dir"]), "--out", str(tmp_path / "p"), "--key", str(key), "--quiet"])
    assert "base64" in err or "damaged" in err
    assert not (tmp_path / "p").exists()


def test_pack_refuses_two_folders_of_one_model(capsys, run, tmp_path):
    key = tmp_path / "k"
    signing.write_private_key(signing.new_private_key(), key)
    err = _error(capsys, ["pack", str(run["model_dir"]), str(run["model_dir"]), "--out", str(tmp_path / "p"),
                          "--key", str(key), "--quiet"])
    assert "both hold breast_binary" in err
    assert not (tmp_path / "p").exists()


def test_evaluate_with_a_dataset_of_another_domain(capsys, run, datasets):
    err = _error(capsys, ["evaluate", str(run["model_dir"]), "--data", str(datasets / "herlev" / "eval"),
                          "--layout", "herlev", "--quiet"])
    assert "breast_binary analyses" in err
