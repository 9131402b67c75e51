"""The demo/test pack builder (`export.demo.build_demo_pack`, `bccdms-export demo`)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import catalogue, signing
from appliance.errors import PackError, UserError
from appliance.inference.pack import load_pack

REPO = Path(__file__).resolve().parents[1]


def _images(size: int, count: int = 3) -> np.ndarray:
    from export.synthetic import synthetic_images
    from export.transforms import eval_transform, input_spec
    transform = eval_transform(input_spec(size))
    return np.stack([transform(im).numpy() for im in synthetic_images(count, size + 9, seed=7)])


def test_tiny_pack_is_accepted_as_a_trusted_clinical_pack(tiny_pack, pack_key):
    pack = load_pack(tiny_pack, trusted_keys=[signing.public_b64(pack_key)], allow_demo=False)
    assert pack.trusted and not pack.demo
    assert set(pack.models) == set(catalogue.MODELS)
    assert pack.verify_all() == []
    for model_id, entry in pack.models.items():
        assert entry.classes == catalogue.MODELS[model_id].class_ids
        assert not entry.demo
        assert {"onnx_int8", "openvino_int8", "openvino_int8_weights", "classifier"} <= set(entry.files)
        assert entry.input.policy == "resize_shorter_center_crop" and entry.input.size == 64


def test_tiny_pack_signed_by_an_unknown_key_is_refused(tiny_pack):
    with pytest.raises(PackError, match="does not trust"):
        load_pack(tiny_pack, trusted_keys=[signing.public_b64(signing.new_private_key())], allow_demo=True)


def test_onnx_models_have_the_contracted_input_and_outputs(tiny_pack, pack_key):
    import onnx
    import onnxruntime as ort
    pack = load_pack(tiny_pack, trusted_keys=[signing.public_b64(pack_key)], allow_demo=False)
    for model_id, entry in pack.models.items():
        data = pack.read_verified(entry.files["onnx_int8"])
        model = onnx.load_from_string(data)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert inp.name == "input" and inp.type == "tensor(float)" and inp.shape[1:] == [3, 64, 64]
        assert [o.name for o in session.get_outputs()] == ["logits", "features"]
        for batch in (1, 3):   # the batch dimension is dynamic
            logits, features = session.run(None, {"input": _images(64, batch)})
            assert logits.shape == (batch, len(entry.classes))
            assert features.ndim == 4 and features.shape[0] == batch and features.shape[2:] == (2, 2)
            assert (features >= 0).all()   # after the last ReLU, before pooling


def test_classifier_file_is_the_graphs_final_layer(tiny_pack, pack_key):
    """logits = mean-pooled features · weightᵀ + bias: what the appliance's heatmap relies on."""
    import io
    import onnxruntime as ort
    pack = load_pack(tiny_pack, trusted_keys=[signing.public_b64(pack_key)], allow_demo=False)
    images = _images(64, 4)
    for entry in pack.models.values():
        classifier = np.load(io.BytesIO(pack.read_verified(entry.files["classifier"])))
        session = ort.InferenceSession(pack.read_verified(entry.files["onnx_fp32"]),
                                       providers=["CPUExecutionProvider"])
        logits, features = session.run(None, {"input": images})
        assert classifier["weight"].shape == (len(entry.classes), features.shape[1])
        assert classifier["bias"].shape == (len(entry.classes),)
        expected = features.mean(axis=(2, 3)) @ classifier["weight"].T + classifier["bias"]
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_int8_graphs_really_run_their_convolutions_in_int8(tiny_pack):
    from export.quantize import onnx_quant_summary, openvino_quant_summary
    onnx_summary = onnx_quant_summary(tiny_pack / "breast_binary" / "model.int8.onnx")
    assert onnx_summary.convolutions == 17 and onnx_summary.all_convolutions_quantized, onnx_summary
    ov_summary = openvino_quant_summary(tiny_pack / "breast_binary" / "model.int8.xml")
    assert ov_summary.convolutions == 17 and ov_summary.all_convolutions_quantized, ov_summary
    fp32 = onnx_quant_summary(tiny_pack / "breast_binary" / "model.fp32.onnx")
    assert fp32.quantized_convolutions == 0   # the counter is not fooled by a float graph


def test_int8_models_follow_the_float_model(tiny_pack):
    manifest = json.loads((tiny_pack / "manifest.json").read_text())
    for model_id, entry in manifest["models"].items():
        check = entry["provenance"]["int8_check"]
        # An untrained tiny network: the heads follow the image, INT8 stays close to float.
        assert check["onnxruntime_max_abs_logit_diff"] < 1.0, (model_id, check)
        assert check["openvino_max_abs_logit_diff"] < 1.5, (model_id, check)


def test_demo_pack_from_the_command_line_is_marked_demo(tmp_path):
    out = tmp_path / "weights" / "demo"
    run = subprocess.run([sys.executable, "-m", "export.cli", "demo", "--arch", "tiny", "--out", str(out),
                          "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    pack = load_pack(out, trusted_keys=[], allow_demo=True)   # accepted by its own key outside clinical mode
    assert pack.demo and not pack.trusted
    assert all(m.demo and m.version.endswith("-demo") for m in pack.models.values())
    with pytest.raises(PackError, match="demo pack"):
        load_pack(out, trusted_keys=[], allow_demo=False)   # clinical mode refuses it
    # Training mode: DEMO thresholds make every result banner reachable, and say they are DEMO.
    assert "DEMO thresholds" in pack.description
    assert "breast_benign_subtype" not in pack.models          # its cascade step shows "not assessed"
    for model in pack.models.values():
        assert 0 < model.refer_below < 1                       # "Uncertain — refer" for the least confident
        assert "ood" in model.files and model.ood["DEMO"] is True
        assert model.ood["synthetic_out_of_scope_flagged"] == "12/12"   # blank and skin frames flagged
        assert model.provenance["demo_thresholds"]["DEMO"].startswith("DEMO thresholds")
    from PIL import Image

    from appliance.config import load_config
    from appliance.inference.engine import Engine
    engine = Engine.from_config(load_config(None), models_dir=out)
    empty_slide = Image.new("RGB", (640, 480), (236, 234, 238))
    result = engine.diagnose(empty_slide, "breast_histopathology")
    assert result.demo and result.out_of_scope["flagged"]      # "does not look like the training images"
    if result.label == "benign" or any(step.top == "benign" for step in result.steps):
        assert {"model": "breast_benign_subtype", "reason": "not installed"} in result.skipped
    # Nothing but the pack is left beside it (it was built in a temporary folder).
    assert [p.name for p in out.parent.iterdir()] == ["demo"]


def test_demo_refuses_to_overwrite_a_folder(tmp_path):
    out = tmp_path / "pack"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    run = subprocess.run([sys.executable, "-m", "export.cli", "demo", "--arch", "tiny", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "already exists" in run.stderr and "--force" in run.stderr and "Traceback" not in run.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_architecture_is_a_user_error(tmp_path):
    from export.demo import DEMO_LEFT_OUT, build_demo_pack
    with pytest.raises(UserError, match="Unknown architecture"):
        build_demo_pack(tmp_path / "x", arch="resnet9000", progress=False)
    assert not (tmp_path / "x").exists()


def test_keygen_prints_the_public_key_and_never_overwrites(tmp_path):
    key_file = tmp_path / "keys" / "packs.key"
    run = subprocess.run([sys.executable, "-m", "export.cli", "keygen", "--out", str(key_file)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    public = run.stdout.strip()
    assert public == signing.public_b64(signing.read_private_key(key_file))
    assert key_file.stat().st_mode & 0o077 == 0
    before = key_file.read_bytes()
    again = subprocess.run([sys.executable, "-m", "export.cli", "keygen", "--out", str(key_file)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert key_file.read_bytes() == before


@pytest.mark.slow
def test_resnet152_demo_pack_builds_end_to_end(tmp_path, artifacts_dir):
    from export.demo import DEMO_LEFT_OUT, build_demo_pack
    from export.quantize import onnx_quant_summary, openvino_quant_summary
    start = time.perf_counter()
    out = build_demo_pack(tmp_path / "demo", arch="resnet152", progress=False)
    seconds = time.perf_counter() - start
    (artifacts_dir / "demo_resnet152_build.json").write_text(json.dumps({"seconds": round(seconds, 1)}) + "\n")
    print(f"\nResNet152 demo pack built in {seconds:.0f} s")
    pack = load_pack(out, trusted_keys=[], allow_demo=True)
    # The benign breast subtype is left out of demo packs on purpose (export.demo.DEMO_LEFT_OUT).
    assert pack.demo and set(pack.models) == set(catalogue.MODELS) - set(DEMO_LEFT_OUT) and pack.verify_all() == []
    entry = pack.models["breast_binary"]
    assert entry.architecture == "resnet152" and entry.input.size == 224 and entry.input.resize == 256
    assert "onnx_fp32" not in entry.files   # kept out of demo packs: 230 MB each
    assert onnx_quant_summary(out / "breast_binary" / "model.int8.onnx").quantized_convolutions == 155
    assert openvino_quant_summary(out / "breast_binary" / "model.int8.xml").quantized_convolutions == 155
    import onnxruntime as ort
    session = ort.InferenceSession(pack.read_verified(entry.files["onnx_int8"]), providers=["CPUExecutionProvider"])
    logits, features = session.run(None, {"input": _images(224, 2)})
    assert logits.shape == (2, 2) and features.shape == (2, 2048, 7, 7)
