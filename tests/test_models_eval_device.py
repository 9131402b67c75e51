"""The GPU training script, run here with --smoke (tiny network, 1 epoch, a few real images, CPU):
it must write its files within the device's limits (8 files, 16 MiB each, 64 MiB), and
assemble_pack must turn them into a signed pack the engine runs, gate included."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import signing
from appliance.errors import UserError
from appliance.inference.pack import load_pack
from export.recipes.assemble_pack import assemble
from export.recipes.device_train import MAX_FILES, MAX_TOTAL_BYTES, MODELS, plan_model_parts
from export.recipes.pack_device_data import pack as pack_device_data

REPO = Path(__file__).resolve().parents[1]


# The GPU machine has torch, torchvision and onnxruntime, perhaps onnx, but not the appliance's other
# libraries (nor onnxscript, which torch does not install): the smoke runs hide them, so an import
# that would fail there fails here.
ABSENT_ON_THE_DEVICE = ("openvino", "nncf", "sklearn", "scipy", "matplotlib", "tqdm", "cryptography", "nacl",
                        "tinydb", "bottle", "waitress", "cv2", "babel", "jinja2", "onnxscript")


def run_as_on_the_device(data: Path, out: Path, *extra: str, absent: tuple[str, ...] = ABSENT_ON_THE_DEVICE):
    script = ("import runpy, sys\n"
              f"for name in {absent!r}:\n"
              "    sys.modules[name] = None\n"
              "sys.argv[0] = 'device_train'\n"
              "runpy.run_module('export.recipes.device_train', run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    return subprocess.run([sys.executable, "-c", script, "--smoke", "--data", str(data), "--out", str(out),
                           "--part-mib", "0.1", *extra], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, datasets):
    """pack_device_data → device_train --smoke in a separate process, without the libraries the
    GPU machine lacks (~25 s)."""
    base = tmp_path_factory.mktemp("device")
    summary = pack_device_data(datasets, base / ".device_data")
    out = base / "OUT"
    done = run_as_on_the_device(base / ".device_data", out)
    return {"base": base, "data": base / ".device_data", "out": out, "summary": summary, "done": done}


def test_device_data_is_small_and_split_by_patient(smoke):
    summary = smoke["summary"]
    assert summary["bytes"] < 40 * 2**20
    assert set(summary["models"]) == set(MODELS)
    for model_id, doc in summary["models"].items():
        train, val = doc["train"], doc["val"]
        assert not set(train["patients"]) & set(val["patients"]), model_id
        assert len(doc["items"]["train"]) == train["images"] and len(doc["items"]["val"]) == val["images"]
    assert summary["models"]["breast_binary"]["method"] == "patient"
    assert summary["models"]["pap_smear"]["method"] == "group"


def test_smoke_run_writes_its_files_within_the_device_limits(smoke):
    done = smoke["done"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(smoke["out"].iterdir())
    sizes = [f.stat().st_size for f in files]
    assert len(files) <= MAX_FILES and sum(sizes) <= MAX_TOTAL_BYTES and max(sizes) <= 16 * 2**20
    names = {f.name for f in files}
    assert {"metrics.json", "model_cards.md", "pap_smear.classifier.npz", "pap_smear.ood.npz",
            "pap_smear.int8.onnx.part0", "pap_smear.int8.onnx.part1"} <= names
    metrics = json.loads((smoke["out"] / "metrics.json").read_text())
    assert set(metrics["models"]) == set(MODELS)
    for model_id, result in metrics["models"].items():
        assert "error" not in result, (model_id, result)
        report = result["report"]
        assert report["forms"]["torch"]["metrics"]["calibration"]["ece_uncalibrated"] is not None
        assert report["out_of_scope"]["synthetic"] and report["refer"]["rule"]
        assert result["training"]["epochs"] == 1 and result["training"]["history"]
    pap = metrics["models"]["pap_smear"]["report"]
    assert {"torch", "onnx_fp32", "onnx_int8"} == set(pap["forms"])
    assert pap["forms"]["onnx_int8"]["parity"]["top1_agreement"] is not None
    assert pap["out_of_scope"]["form"] == "onnx_int8"
    cards = (smoke["out"] / "model_cards.md").read_text()
    assert all(f"# Model card: {m}" in cards for m in MODELS)
    assert "| light_dysplastic | abnormal | abnormal | by its group |" in cards     # the label → class table
    assert "[" in done.stdout and "wrote" in done.stdout                 # progress lines with the clock


def test_returned_files_become_a_signed_pack_the_engine_runs(smoke, tmp_path, datasets):
    from appliance.config import load_config
    from appliance.inference.engine import Engine
    key = signing.new_private_key()
    pack = assemble(smoke["out"], tmp_path / "pack", key, data_root=smoke["data"], cards=tmp_path / "cards",
                    progress=False)
    loaded = load_pack(pack, trusted_keys=[signing.public_b64(key)], allow_demo=False)
    entry = loaded.models["pap_smear"]
    assert {"onnx_int8", "openvino_int8", "openvino_int8_weights", "classifier", "ood", "card", "card_json",
            "figure_roc", "figure_reliability"} <= set(entry.files)
    assert entry.refer_below is not None and not entry.demo
    assert entry.provenance["quantization"]["openvino"]["quantized_convolutions"] == 17
    card = json.loads((pack / "pap_smear" / "model_card.json").read_text())
    checked = card["report"]["checked_here"]
    assert checked["onnxruntime_vs_openvino"]["top1_agreement"] >= 0.9
    assert card["key_figures"]["accuracy_int8_openvino"] is not None
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == sorted(
        f"{m}.gpu.{ext}" for m in MODELS for ext in ("md", "json"))
    cfg = load_config(data_dir=tmp_path / "data", environ={})
    cfg.security.trusted_model_keys = [signing.public_b64(key)]
    cell = sorted((datasets / "herlev/originals/normal_columnar").iterdir())[0]
    result = Engine.from_config(cfg, models_dir=pack).diagnose(cell, "pap_smear").to_json()
    assert result["out_of_scope"]["assessed"] is True and result["demo"] is False


def test_without_onnx_on_the_device_the_weights_come_back_and_are_packed_here(smoke, tmp_path):
    out = tmp_path / "OUT"
    done = run_as_on_the_device(smoke["data"], out, "--models", "pap_smear",
                                absent=ABSENT_ON_THE_DEVICE + ("onnx",))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    names = {p.name for p in out.iterdir()}
    assert {"pap_smear.weights.npz.part0", "metrics.json"} <= names and not any("onnx" in n for n in names)
    key = signing.new_private_key()
    pack = assemble(out, tmp_path / "pack", key, data_root=smoke["data"], progress=False)
    entry = load_pack(pack, trusted_keys=[signing.public_b64(key)], allow_demo=False).models["pap_smear"]
    assert {"onnx_int8", "openvino_int8", "ood", "card"} <= set(entry.files)
    assert "int8 per output channel" in entry.provenance["weights"]
    card = json.loads((pack / "pap_smear" / "model_card.json").read_text())
    assert card["report"]["forms"]["onnx_int8"]["parity"]["top1_agreement"] is not None


def test_a_damaged_part_is_refused_and_no_pack_is_written(smoke, tmp_path):
    returned = tmp_path / "returned"
    shutil.copytree(smoke["out"], returned)
    part = returned / "pap_smear.int8.onnx.part1"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the checksum"):
        assemble(returned, tmp_path / "pack", signing.new_private_key(), data_root=smoke["data"], progress=False)
    assert not (tmp_path / "pack").exists()


def test_device_run_without_its_data_says_what_to_do(tmp_path):
    done = subprocess.run([sys.executable, "-m", "export.recipes.device_train", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pack_device_data" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_model_is_compressed_only_when_the_raw_parts_do_not_fit():
    raw = bytes(range(256)) * 4096                      # 1 MiB, compresses well
    suffix, parts = plan_model_parts(raw, other_bytes=0, other_files=4, part_bytes=300_000)
    assert suffix == "" and len(parts) == 4 and b"".join(parts) == raw
    suffix, parts = plan_model_parts(raw, other_bytes=0, other_files=6, part_bytes=300_000)
    assert suffix == ".xz" and len(parts) <= 2
    with pytest.raises(RuntimeError, match="does not fit"):
        plan_model_parts(os.urandom(1_000_000), other_bytes=0, other_files=7, part_bytes=300_000)


def test_compact_weights_round_trip_within_half_a_step_per_channel():
    import torch
    from export.models import TinyResNet
    from export.recipes.assemble_pack import dequantize
    from export.recipes.device_train import compact_weights
    torch.manual_seed(0)
    net = TinyResNet(3)
    data = compact_weights(net)
    state = dequantize(data)
    original = net.state_dict()
    assert set(state) == set(original)
    for name, value in original.items():
        if value.is_floating_point() and value.ndim >= 2:
            step = value.abs().flatten(1).max(dim=1).values / 127
            assert ((state[name] - value).abs().flatten(1).max(dim=1).values <= step / 2 + 1e-7).all(), name
        else:
            assert torch.equal(state[name].to(value.dtype), value), name
    assert len(data) < sum(v.numel() * v.element_size() for v in original.values()) / 2
