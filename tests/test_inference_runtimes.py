"""Both runtimes run the real tiny pack and agree; the auto-choice, the thread count, the
OpenVINO float precision and the telemetry block are what the configuration says."""
from __future__ import annotations

import mmap
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from appliance.errors import UserError
from appliance.inference.engine import Engine
from appliance.inference.runtimes import base

from inference_helpers import ORIGINAL_IMAGE, trusting

def real_images(datasets) -> list:
    files = [datasets / ORIGINAL_IMAGE]
    for dataset in ("breakhis", "herlev", "iarc_colposcopy"):
        files += sorted((datasets / dataset / "originals").glob("*/*"))[1::4]
    return files


@pytest.fixture(scope="module")
def engines(tiny_pack, pack_key, tmp_path_factory):
    """One engine per runtime and precision, on the same tiny pack."""
    from appliance.config import load_config
    made = {}
    for runtime in ("openvino", "onnxruntime"):
        for precision in ("int8", "fp32"):
            cfg = trusting(load_config(data_dir=tmp_path_factory.mktemp("data"), environ={}), pack_key)
            cfg.inference.runtime, cfg.inference.precision = runtime, precision
            made[runtime, precision] = Engine.from_config(cfg, models_dir=tiny_pack)
    return made


def logits_by_engine(engines, datasets, model_id: str) -> dict:
    from appliance.inference.imageio import load_image
    from appliance.inference.preprocess import preprocess
    spec = engines["openvino", "int8"].slots[model_id].entry.input
    tensors = [preprocess(load_image(f, 10**8), spec) for f in real_images(datasets)]
    return {key: np.array([e.run_model(model_id, t).logits for t in tensors]) for key, e in engines.items()}


@pytest.mark.parametrize("model_id", ["pap_smear", "cervix_type", "breast_binary"])
def test_openvino_and_onnxruntime_agree_on_real_images(engines, datasets, model_id):
    logits = logits_by_engine(engines, datasets, model_id)
    # The same FP32 network in two runtimes: the same numbers.
    assert np.abs(logits["openvino", "fp32"] - logits["onnxruntime", "fp32"]).max() < 1e-3
    # Two INT8 quantizations (ONNX Runtime QDQ, NNCF) of an untrained tiny network whose
    # calibration saw synthetic textures only: the same picture, not the same numbers.
    ov, ort = logits["openvino", "int8"].ravel(), logits["onnxruntime", "int8"].ravel()
    assert np.corrcoef(ov, ort)[0, 1] > 0.85
    top_ov, top_ort = logits["openvino", "int8"].argmax(1), logits["onnxruntime", "int8"].argmax(1)
    assert (top_ov == top_ort).mean() >= 0.7


def test_results_name_the_runtime_and_precision_that_ran(engines, datasets):
    for (runtime, precision), engine in engines.items():
        result = engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
        assert (result.runtime, result.precision) == (runtime, precision)
        assert engine.status()["models"]["pap_smear"]["file"].startswith(
            "openvino" if runtime == "openvino" else "onnx")
        assert engine.status()["models"]["pap_smear"]["file"].endswith(precision)


def test_auto_choice_is_openvino_on_x86_and_onnxruntime_on_arm():
    assert base.preference_order("auto", "x86_64") == ("openvino", "onnxruntime")
    assert base.preference_order("auto", "AMD64") == ("openvino", "onnxruntime")
    assert base.preference_order("auto", "aarch64") == ("onnxruntime", "openvino")
    assert base.preference_order("onnxruntime", "x86_64") == ("onnxruntime",)


def test_threads_zero_means_physical_cores(cfg):
    assert base.options_from_config(cfg.inference).threads == base.physical_cores() >= 1
    cfg.inference.threads = 3
    assert base.options_from_config(cfg.inference).threads == 3


def test_unknown_runtime_name_is_a_user_error():
    with pytest.raises(UserError, match="no inference runtime called 'tensorrt'"):
        base.create("tensorrt", base.RuntimeOptions(1, "int8", "f32"))


@pytest.mark.parametrize("setting", ["f32", "bf16"])
def test_openvino_float_precision_is_the_configured_one(engines, setting):
    """On CPUs with BF16, OpenVINO picks bf16 by itself; the appliance asks for f32 unless set."""
    import openvino as ov
    slot = engines["openvino", "int8"].slots["pap_smear"]
    runtime = base.create("openvino", base.RuntimeOptions(1, "int8", setting))
    model = runtime.load(slot.pack, slot.entry)
    has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = ov.Type.bf16 if setting == "bf16" and has_bf16 else ov.Type.f32
    assert model.compiled.get_property("INFERENCE_PRECISION_HINT") == expected
    assert model.compiled.get_property("NUM_STREAMS") == 1
    assert model.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert str(model.compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    if has_bf16:   # what the setting protects against: OpenVINO's own default on this CPU
        default = runtime.core.compile_model(runtime.core.read_model(str(slot.pack.root / slot.entry.files["openvino_int8"])), "CPU")
        assert default.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16


def resident_pages(mapping: mmap.mmap, ranges: list[tuple[int, int]]) -> int:
    """Pages of these (offset, length) ranges of ``mapping`` now in this process's memory
    (Linux /proc/self/pagemap: bit 63 of each page's entry says "present")."""
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    count = 0
    with open("/proc/self/pagemap", "rb") as fh:
        for offset, length in ranges:
            fh.seek((base + offset) // mmap.PAGESIZE * 8)
            entries = np.frombuffer(fh.read(length // mmap.PAGESIZE * 8), dtype="<u8")
            count += int((entries >> np.uint64(63)).sum())
    return count


@pytest.mark.skipif(not base.is_x86(), reason="weights are handed back only where the CPU plugin repacks them (x86-64)")
def test_openvino_keeps_one_copy_of_the_int8_weights_and_never_reads_the_other(engines, datasets):
    """The compiled model repacks its INT8 weights; the verified originals are handed back to
    the kernel, never read again, and the results are those of the model compiled from bytes."""
    from appliance.inference.imageio import load_image
    from appliance.inference.preprocess import preprocess
    slot = engines["openvino", "int8"].slots["breast_binary"]
    runtime = base.create("openvino", base.RuntimeOptions(2, "int8", "f32"))
    mapped = runtime.load(slot.pack, slot.entry)
    roles = ("openvino_int8", "openvino_int8_weights")
    from_bytes = runtime.load_files(slot.entry, {r: slot.pack.read_verified(slot.entry.files[r]) for r in roles},
                                    "openvino_int8")
    released = mapped.released_ranges
    assert sum(length for _, length in released) >= 0.5 * len(mapped.weights) and from_bytes.released_ranges == []
    assert resident_pages(mapped.weights, released) == 0
    for image in real_images(datasets)[:3]:
        tensor = preprocess(load_image(image, 10**8), slot.entry.input)
        ours, reference = mapped.run(tensor, features=True), from_bytes.run(tensor, features=True)
        assert np.array_equal(ours.logits, reference.logits) and np.array_equal(ours.features, reference.features)
    mapped.compiled.create_infer_request().infer({0: tensor})     # a new request needs them no more
    assert resident_pages(mapped.weights, released) == 0          # inference never touched them
    first_kept = next(off for off in range(0, len(mapped.weights), mmap.PAGESIZE)
                      if not any(start <= off < start + length for start, length in released))
    assert resident_pages(mapped.weights, [(first_kept, mmap.PAGESIZE)]) == 1   # the probe does see pages

    # [inference] openvino_hand_back_weights = false keeps both copies (the way back).
    kept = base.create("openvino", base.RuntimeOptions(2, "int8", "f32", openvino_hand_back_weights=False))
    both = kept.load(slot.pack, slot.entry)
    assert both.released_ranges == [] and np.array_equal(both.run(tensor, features=False).logits, reference.logits)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_openvino_telemetry_is_blocked_for_the_whole_process():
    done = run_python("""
        import sys
        import appliance.inference.runtimes.openvino as rt
        assert sys.modules["openvino_telemetry"] is None
        try:
            import openvino_telemetry
        except ImportError:
            pass
        else:
            raise SystemExit("openvino_telemetry could be imported")
        from openvino.tools.ovc import telemetry_utils   # the converter falls back to its no-op stub
        print(telemetry_utils.tm.__name__)
        import nncf.telemetry.wrapper as w               # NNCF sends unless the consent file says no
        print("nncf sends" if isinstance(w.telemetry, w.NNCFTelemetry) else "nncf silent")
    """)
    assert done.returncode == 0, done.stderr
    assert "telemetry_stub" in done.stdout and "nncf silent" in done.stdout


def test_an_absent_runtime_falls_back_when_auto_and_is_a_clear_error_when_chosen(tiny_pack, pack_key, tmp_path):
    from appliance import signing
    code = f"""
        import sys
        sys.modules["openvino"] = None          # as on a box where OpenVINO is not installed
        from appliance.config import load_config
        from appliance.errors import UserError
        from appliance.inference.engine import Engine
        for choice in ("auto", "openvino"):
            cfg = load_config(data_dir={str(tmp_path)!r}, environ={{}})
            cfg.security.trusted_model_keys = [{signing.public_b64(pack_key)!r}]
            cfg.inference.runtime = choice
            engine = Engine.from_config(cfg, models_dir={str(tiny_pack)!r})
            status = engine.status()
            print(choice, status["runtime"], engine.analyses(), status["problems"])
            try:
                print(choice, engine.diagnose({str(tiny_pack.parent)!r} + "/../x.png", "pap_smear").runtime)
            except UserError as exc:
                print(choice, "ERROR", exc.message)
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    auto, auto_run, chosen, chosen_run = done.stdout.strip().splitlines()
    assert auto.startswith("auto onnxruntime ['breast_histopathology'") and "OpenVINO" not in auto_run
    assert "openvino is not installed" in auto
    assert chosen.startswith("openvino None []")
    assert "ERROR The inference runtime openvino is not installed" in chosen_run


def test_logits_are_the_classifier_applied_to_the_pooled_features(engines, datasets):
    """The pack's classifier file is the network's own last layer: the heatmap is its evidence."""
    engine = engines["onnxruntime", "fp32"]
    slot = engine.slots["cervix_type"]
    engine.preload(["cervix_type"])
    from appliance.inference.imageio import load_image
    from appliance.inference.preprocess import preprocess
    tensor = preprocess(load_image(datasets / ORIGINAL_IMAGE, 10**8), slot.entry.input)
    out = engine.run_model("cervix_type", tensor)
    weight, bias = slot.classifier
    pooled = out.features.mean(axis=(1, 2))
    assert np.allclose(weight @ pooled + bias, out.logits, atol=1e-4)
