"""OpenVINO on the CPU: the default runtime on x86-64 boxes.

Settings and why:
- ``INFERENCE_PRECISION_HINT`` f32 unless ``[inference] openvino_float_precision = "bf16"``:
  on CPUs with BF16 (AVX512-BF16, AMX) OpenVINO would otherwise run every float part of
  the graph in BF16 by default, which changes the probabilities a clinician reads.
- ``PERFORMANCE_HINT`` LATENCY with one stream and ``[inference] threads`` threads: one image
  at a time, as fast as possible, leaving the other cores to the web server and camera.
- The input is reshaped to the pack's static 1×3×S×S before compiling: static shapes let
  the CPU plugin pick its fastest kernels, like benchmark_app with ``-shape``.
- Models are read from the verified bytes (``core.read_model(model=xml, weights=Tensor)``),
  never from the files again: what runs is what was checked.
"""
from __future__ import annotations

import sys

import numpy as np

from ..pack import ModelEntry
from .base import LoadedModel, ModelOutput, Runtime, RuntimeOptions


def block_telemetry() -> None:
    """Make sure no OpenVINO component sends usage telemetry from this process.

    The OpenVINO runtime itself sends nothing; the tools built on it (model conversion,
    NNCF) import ``openvino_telemetry``, which sends to Google Analytics when the consent
    file ``~/intel/openvino_telemetry`` is absent (NNCF treats absent as consent). Marking
    the module as unimportable makes every such tool fall back to its built-in no-op stub,
    for this process, without touching any file outside the appliance.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # import raises ImportError from now on


block_telemetry()
import openvino as ov  # noqa: E402 - after the telemetry block, on purpose


class OpenVinoModel(LoadedModel):
    def __init__(self, compiled, entry: ModelEntry, precision: str, role: str):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision
        self.file_role = role
        names = {name for out in compiled.outputs for name in out.get_names()}
        self._logits = compiled.output(entry.outputs.get("logits", "logits"))
        feature_name = entry.outputs.get("features", "features")
        self._features = compiled.output(feature_name) if feature_name in names else None

    def run(self, batch: np.ndarray, *, features: bool) -> ModelOutput:
        # No copies inside OpenVINO: the input is read in place, and the outputs are views of the
        # request's buffers, which the next run overwrites, so we copy out what we keep.
        result = self.request.infer({0: batch}, share_inputs=True, share_outputs=True)
        logits = np.array(result[self._logits][0], dtype=np.float32)
        feats = None
        if features and self._features is not None:
            feats = np.array(result[self._features][0], dtype=np.float32)
        return ModelOutput(logits, feats)


class OpenVinoRuntime(Runtime):
    name = "openvino"

    def __init__(self, options: RuntimeOptions):
        super().__init__(options)
        self.core = ov.Core()

    def version(self) -> str:
        return ov.get_version()

    def file_roles(self) -> tuple[tuple[str, ...], ...]:
        ir_int8 = ("openvino_int8", "openvino_int8_weights")
        ir_fp32 = ("openvino_fp32", "openvino_fp32_weights")
        # OpenVINO also reads ONNX (including ONNX Runtime's QDQ INT8), so a pack without IR still runs.
        if self.options.precision == "int8":
            return (ir_int8, ("onnx_int8",), ir_fp32, ("onnx_fp32",))
        return (ir_fp32, ("onnx_fp32",))

    def compile_config(self) -> dict[str, str]:
        """The CPU plugin properties (bench/bench_inference.py hands the same to benchmark_app)."""
        return {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(self.options.threads),
            "INFERENCE_PRECISION_HINT": "bf16" if self.options.openvino_float_precision == "bf16" else "f32",
        }

    def load_files(self, entry: ModelEntry, files: dict[str, bytes], role: str) -> LoadedModel:
        if role.startswith("openvino_"):
            weights = files[role + "_weights"]
            model = self.core.read_model(model=files[role],
                                         weights=ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
        else:
            model = self.core.read_model(model=files[role])
        size = entry.input.size
        model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([1, 3, size, size])})
        compiled = self.core.compile_model(model, "CPU", self.compile_config())
        precision = "int8" if role in ("openvino_int8", "onnx_int8") else "fp32"
        return OpenVinoModel(compiled, entry, precision, role)
