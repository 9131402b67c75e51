"""Slow: a real ResNet152 through the whole user path — `bccdms-export train` (one short
epoch on real Pap-smear cells), `export`, `quantize` (both runtimes), `pack` — into the
appliance's engine, on both runtimes, FP32 and INT8."""
from __future__ import annotations

import time

import numpy as np
import pytest

from appliance import signing
from appliance.inference.engine import Engine

pytestmark = pytest.mark.slow

PER_CLASS = {"normal": ("normal_columnar", "normal_intermediate"), "abnormal": ("severe_dysplastic", "carcinoma_in_situ")}


def small_image_folder(datasets, root):
    """An ImageFolder of 16 real Herlev cells (8 normal, 8 abnormal), linked, not copied."""
    for label, sources in PER_CLASS.items():
        (root / label).mkdir(parents=True)
        for source in sources:
            for path in sorted((datasets / "herlev" / "eval" / source).glob("*.jpg"))[:4]:
                (root / label / f"{source}-{path.name}").symlink_to(path)
    return root


def test_resnet152_export_int8_engine(datasets, tmp_path, pack_key, cfg):
    from export.pipeline import build_pack, export_checkpoint, quantize_model_folder
    from export.train import TrainOptions, train

    started = time.perf_counter()
    data = small_image_folder(datasets, tmp_path / "cells")
    run = tmp_path / "run"
    checkpoint = train(TrainOptions(model_id="pap_smear", data=str(data), out=str(run), layout="imagefolder",
                                    arch="resnet152", weights="none", epochs=1, batch_size=4, workers=0,
                                    val_fraction=0.25, amp=False), progress=False)
    folder = export_checkpoint(checkpoint, tmp_path / "model", version="1.0.0", progress=False)
    summary = quantize_model_folder(folder, data=str(data), layout="imagefolder", calibration_images=8,
                                    progress=False)
    assert summary["onnxruntime"]["quantized_convolutions"] == summary["onnxruntime"]["convolutions"] == 155
    assert summary["openvino"]["quantized_convolutions"] == summary["openvino"]["convolutions"] == 155
    pack = build_pack([folder], tmp_path / "pack", pack_key, pack_id="slow-test", version="1.0.0", progress=False)
    built = time.perf_counter() - started

    cfg.security.trusted_model_keys = [signing.public_b64(pack_key)]
    images = sorted((datasets / "herlev" / "originals").glob("*/*.jpg"))[::5]
    probabilities = {}
    for runtime in ("openvino", "onnxruntime"):
        for precision in ("int8", "fp32"):
            cfg.inference.runtime, cfg.inference.precision = runtime, precision
            engine = Engine.from_config(cfg, models_dir=pack)
            results = [engine.diagnose(path, "pap_smear") for path in images]
            assert {(r.runtime, r.precision) for r in results} == {(runtime, precision)}
            assert all(r.demo is False and r.pack["id"] == "slow-test" for r in results)
            probabilities[runtime, precision] = np.array([[r.steps[0].probabilities[c] for c in ("normal", "abnormal")]
                                                          for r in results])
            png = results[0].heatmap_png()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            latency = engine.status()["models"]["pap_smear"]["latency_ms"]
            assert latency < 2000, f"{runtime} {precision}: {latency} ms per image"
    fp32 = probabilities["openvino", "fp32"]
    assert np.abs(fp32 - probabilities["onnxruntime", "fp32"]).max() < 1e-3      # one network, two runtimes
    for runtime in ("openvino", "onnxruntime"):
        int8 = probabilities[runtime, "int8"]
        # INT8 of a network trained for one epoch: the same decisions on most cells.
        assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.75, (runtime, int8, fp32)
        assert np.abs(int8 - fp32).mean() < 0.15
    print(f"\nResNet152 train+export+quantize+pack {built:.0f} s; whole test {time.perf_counter() - started:.0f} s")
