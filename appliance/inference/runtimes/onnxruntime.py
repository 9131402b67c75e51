"""ONNX Runtime on the CPU: the default runtime on ARM boxes (Raspberry Pi 5).

The session is built from the verified bytes (``InferenceSession(bytes)``), with
``[inference] threads`` intra-op threads, one inter-op thread (a ResNet is a chain: nothing
runs in parallel between operators) and every graph optimisation, which fuses the QDQ
pairs of the INT8 model into integer convolutions.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..pack import ModelEntry
from .base import LoadedModel, ModelOutput, Runtime


class OnnxRuntimeModel(LoadedModel):
    def __init__(self, session: ort.InferenceSession, entry: ModelEntry, precision: str, role: str):
        self.session = session
        self.precision = precision
        self.file_role = role
        self._input = session.get_inputs()[0].name
        names = {o.name for o in session.get_outputs()}
        self._logits = entry.outputs.get("logits", "logits")
        feature_name = entry.outputs.get("features", "features")
        self._features = feature_name if feature_name in names else None

    def run(self, batch: np.ndarray, *, features: bool) -> ModelOutput:
        wanted = [self._logits] + ([self._features] if features and self._features else [])
        outputs = self.session.run(wanted, {self._input: batch})
        feats = outputs[1][0] if len(outputs) > 1 else None
        return ModelOutput(np.asarray(outputs[0][0], dtype=np.float32), feats)


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def version(self) -> str:
        return ort.__version__

    def file_roles(self) -> tuple[tuple[str, ...], ...]:
        if self.options.precision == "int8":
            return (("onnx_int8",), ("onnx_fp32",))
        return (("onnx_fp32",),)

    def session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3          # errors only: warnings about unused initializers are noise here
        # No arena: the memory plan already sizes one block per run, and the arena's spare
        # capacity costs ~8 MB per ResNet152 session, 56 MB for seven models.
        so.enable_cpu_mem_arena = False
        return so

    def load_files(self, entry: ModelEntry, files: dict[str, bytes], role: str) -> LoadedModel:
        session = ort.InferenceSession(files[role], sess_options=self.session_options(),
                                       providers=["CPUExecutionProvider"])
        return OnnxRuntimeModel(session, entry, "int8" if role == "onnx_int8" else "fp32", role)
