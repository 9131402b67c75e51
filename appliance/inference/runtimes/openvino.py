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
- Memory: the CPU plugin repacks every INT8 weight into its own layout when it compiles, yet
  its constants keep pointing at the bytes they were read from, so a model read from bytes
  holds its weights twice (~55 MB more per ResNet152, ~380 MB for seven). The IR weights
  therefore come in page-aligned memory of their own (`Pack.map_verified`; the tensor shares
  it), and once the model is compiled and has run once, the whole pages holding only INT8
  weights are handed back to the system and made inaccessible: nothing can ever compute with
  anything but the verified bytes (a read there would stop the process, not use other
  bytes). Float constants (scales, biases) are read at every inference and stay. A test
  checks that inference never touches the handed-back pages (tests/test_inference_runtimes.py);
  that is the x86-64 CPU plugin, so only there are pages handed back (on ARM, OpenVINO's
  kernels may read INT8 weights in place). A compiled model with handed-back weights must
  never be exported (`export_model` reads them).
"""
from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np

from ..pack import ModelEntry
from .base import LoadedModel, ModelOutput, Runtime, RuntimeOptions, is_x86


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
    def __init__(self, compiled, entry: ModelEntry, precision: str, role: str, weights=None):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision
        self.file_role = role
        # The verified map the compiled model's constants point into: mapped as long as it lives.
        self.weights = weights
        self.released_ranges: list[tuple[int, int]] = []    # (offset, length) handed back
        names = {name for out in compiled.outputs for name in out.get_names()}
        self._logits = compiled.output(entry.outputs.get("logits", "logits"))
        feature_name = entry.outputs.get("features", "features")
        self._features = compiled.output(feature_name) if feature_name in names else None

    def warm_up(self) -> None:
        """One run on a blank image: the plugin finishes its own weights and buffers now, not
        during the first exam."""
        port = self.compiled.input(0)
        self.request.infer({0: np.zeros(tuple(port.shape), dtype=np.float32)})

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

    def read_file(self, pack, relpath: str, role: str):
        if role.endswith("_weights"):
            return pack.map_verified(relpath)
        return pack.read_verified(relpath)

    def load_files(self, entry: ModelEntry, files: dict, role: str) -> LoadedModel:
        weights = files.get(role + "_weights")
        if weights is not None:
            model = self.core.read_model(model=files[role], weights=weights_tensor(weights))
        else:
            model = self.core.read_model(model=files[role])
        size = entry.input.size
        model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([1, 3, size, size])})
        compiled = self.core.compile_model(model, "CPU", self.compile_config())
        precision = "int8" if role in ("openvino_int8", "onnx_int8") else "fp32"
        loaded = OpenVinoModel(compiled, entry, precision, role, weights)
        loaded.warm_up()
        # Only on x86-64, where the repacking was verified; [inference] openvino_hand_back_weights.
        if isinstance(weights, mmap.mmap) and is_x86() and self.options.openvino_hand_back_weights:
            loaded.released_ranges = release_repacked_weights(model, weights)
        return loaded


def weights_tensor(weights) -> ov.Tensor:
    """The IR weights as a tensor: sharing a (writable) verified map, or a copy of bytes."""
    if isinstance(weights, mmap.mmap):
        return ov.Tensor(np.frombuffer(weights, dtype=np.uint8), shared_memory=True)
    return ov.Tensor(np.frombuffer(weights, dtype=np.uint8))


def integer_constant_ranges(model, mapping: mmap.mmap) -> list[tuple[int, int]]:
    """(start, end) offsets in ``mapping`` of the model's INT8 constants (its quantized
    weights), merged where they touch."""
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    ranges = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant" and op.get_output_element_type(0) in (ov.Type.i8, ov.Type.u8):
            data = op.get_data()
            start = data.ctypes.data - base
            if 0 <= start and start + data.nbytes <= len(mapping):
                ranges.append((start, start + data.nbytes))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def release_repacked_weights(model, mapping: mmap.mmap) -> list[tuple[int, int]]:
    """Hand back the whole pages of ``mapping`` that hold only INT8 weights, which the compiled
    model has repacked into its own memory, and make them inaccessible; returns (offset,
    length) of each range. Pages shared with float constants stay as they are."""
    mprotect = _libc_mprotect()
    if mprotect is None or not hasattr(mmap, "MADV_DONTNEED"):
        return []
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    page = mmap.PAGESIZE
    released = []
    for start, end in integer_constant_ranges(model, mapping):
        first, last = -(-start // page) * page, end // page * page
        if last > first and mprotect(ctypes.c_void_p(base + first), last - first, _PROT_NONE) == 0:
            mapping.madvise(mmap.MADV_DONTNEED, first, last - first)    # private anonymous: freed
            released.append((first, last - first))
    return released


_PROT_NONE = 0


def _libc_mprotect():
    """libc's mprotect, or None where there is no such C library (then nothing is handed back)."""
    try:
        mprotect = ctypes.CDLL(None, use_errno=True).mprotect
    except (OSError, AttributeError):
        return None
    mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    mprotect.restype = ctypes.c_int
    return mprotect
