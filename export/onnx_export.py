"""PyTorch → ONNX FP32, with the two outputs the appliance needs, and the checks after it.

Graph contract (docs/ARCHITECTURE.md, "Model packs"): one input ``input`` (N×3×H×W float32,
dynamic N), outputs ``logits`` (N×C) and ``features`` (N×2048×h×w), opset ≥ 17.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT = "input"
OUTPUTS = ("logits", "features")
OPSET = 18   # the torch.export-based exporter's lowest opset; the appliance needs ≥ 17


@dataclass
class ExportCheck:
    """What the checks after export found: shapes, and how far ONNX Runtime is from torch."""
    logits_shape: tuple[int, ...]
    features_shape: tuple[int, ...]
    max_abs_logit_diff: float
    max_abs_feature_diff: float
    top1_agreement: float

    def as_dict(self) -> dict:
        return {"logits_shape": list(self.logits_shape), "features_shape": list(self.features_shape),
                "max_abs_logit_diff": self.max_abs_logit_diff,
                "max_abs_feature_diff": self.max_abs_feature_diff, "top1_agreement": self.top1_agreement}


def export_onnx(net, path: Path, image_size: int) -> Path:
    """Export a ResNet (``torchvision`` layout) with outputs ``logits`` and ``features``.

    ``net`` is put in eval mode. The batch dimension is dynamic; the image size is fixed at
    ``image_size`` (the appliance always feeds the pack's input size).
    """
    import torch
    from .models import FeatureNet

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = FeatureNet(net).eval()
    # Batch 2 for tracing so that the exporter does not specialise the batch dimension to 1.
    example = torch.zeros(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    # The exporter prints its own progress on stdout; keep stdout for our reports.
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
                          opset_version=OPSET, dynamic_shapes={"x": {0: batch}}, dynamo=True,
                          external_data=False, verbose=False)
    return path


def check_onnx(path: Path, net, images: np.ndarray) -> ExportCheck:
    """onnx.checker on the file, then ONNX Runtime against torch on ``images`` (N×3×H×W)."""
    import onnx
    import torch
    from .models import FeatureNet

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    if [i.name for i in model.graph.input] != [INPUT] or [o.name for o in model.graph.output] != list(OUTPUTS):
        raise RuntimeError(f"{path}: unexpected graph inputs/outputs")
    with torch.no_grad():
        t_logits, t_features = (t.numpy() for t in FeatureNet(net).eval()(torch.from_numpy(images)))
    o_logits, o_features = run_onnx(path.read_bytes(), images)
    return ExportCheck(tuple(o_logits.shape), tuple(o_features.shape),
                       float(np.abs(o_logits - t_logits).max()), float(np.abs(o_features - t_features).max()),
                       float((o_logits.argmax(1) == t_logits.argmax(1)).mean()))


def ort_session(model: bytes | str | Path, threads: int = 0):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_onnx(model: bytes | str | Path, images: np.ndarray, session=None) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, features)`` of an ONNX model (FP32 or INT8) on a float32 batch."""
    session = session or ort_session(model)
    logits, features = session.run(list(OUTPUTS), {INPUT: np.ascontiguousarray(images, np.float32)})
    return logits, features
