"""INT8 for both runtimes, and OpenVINO IR FP32.

ONNX Runtime: static quantization, QDQ format, per-channel weights, activations U8 and
weights S8 (U8S8: measured on the target CPUs, S8S8 left 54 of 155 ResNet152 convolutions in
FP32 and ran 2–4× slower), after ``quant_pre_process`` (shape inference + graph optimisation).
OpenVINO: ``convert_model`` → IR FP32 (``compress_to_fp16=False``), and NNCF post-training
quantization of that model for INT8.

Both calibrate on the same images (preprocessed with ``eval_transform``) and keep the final
classifier (Gemm/MatMul) in float: it is tiny, and its precision is what the probabilities
and the class-activation map are made of.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .onnx_export import INPUT
from .progress import Progress, quiet_libraries

CALIBRATION_BATCH = 4
# Operations that pass quantized values through unchanged: an INT8 convolution may take its
# input from a FakeQuantize that sits before a MaxPool.
_OV_PASS_THROUGH = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat"}


@dataclass
class QuantSummary:
    """How much of a quantized graph really runs in INT8."""
    runtime: str
    convolutions: int
    quantized_convolutions: int
    ops: dict[str, int] = field(default_factory=dict)

    @property
    def all_convolutions_quantized(self) -> bool:
        return self.convolutions > 0 and self.quantized_convolutions == self.convolutions

    def as_dict(self) -> dict:
        return {"runtime": self.runtime, "convolutions": self.convolutions,
                "quantized_convolutions": self.quantized_convolutions}

    def __str__(self) -> str:
        return f"{self.runtime}: {self.quantized_convolutions} of {self.convolutions} convolutions in INT8"


# ---------------------------------------------------------------- ONNX Runtime

def onnx_head_node(model):
    """The classifier node (Gemm or MatMul/Add) that produces the ``logits`` output."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get("logits")
    if node is not None and node.op_type == "Add":   # MatMul + Add form
        node = next((producers[i] for i in node.input if i in producers
                     and producers[i].op_type == "MatMul"), node)
    if node is None or node.op_type not in ("Gemm", "MatMul"):
        raise RuntimeError("the ONNX graph has no Gemm/MatMul producing 'logits'")
    return node


def quantize_onnx_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray,
                       progress: Progress | None = None) -> QuantSummary:
    """ONNX Runtime static INT8 (QDQ, per-channel, U8S8) calibrated on ``calibration`` (N×3×H×W)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    progress = progress or Progress(False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            batches = range(0, len(calibration), CALIBRATION_BATCH)
            self._batches = iter(progress.bar(batches, desc="ORT calibration", unit="batch", leave=False))

        def get_next(self):
            start = next(self._batches, None)
            if start is None:
                return None
            return {INPUT: np.ascontiguousarray(calibration[start:start + CALIBRATION_BATCH], np.float32)}

    with tempfile.TemporaryDirectory(prefix="bccdms-quant-") as tmp, quiet_libraries(progress.enabled), \
            contextlib.redirect_stdout(io.StringIO()):
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        head = onnx_head_node(onnx.load(str(prepared)))
        quantize_static(
            str(prepared), str(out_path), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=[head.name],
        )
    return onnx_quant_summary(out_path)


def onnx_quant_summary(model_or_path) -> QuantSummary:
    """Count the convolutions that run in INT8: QLinearConv/ConvInteger, or a Conv whose input
    and weight both come from DequantizeLinear (QDQ form, which the runtime fuses to INT8)."""
    import onnx
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    producers = {out: node for node in model.graph.node for out in node.output}
    ops = Counter(node.op_type for node in model.graph.node)

    def dequantized(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    qdq = sum(1 for node in model.graph.node if node.op_type == "Conv"
              and dequantized(node.input[0]) and dequantized(node.input[1]))
    integer = ops["QLinearConv"] + ops["ConvInteger"]
    return QuantSummary("onnxruntime", ops["Conv"] + integer, qdq + integer, dict(ops))


# ---------------------------------------------------------------- OpenVINO

def convert_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """ONNX FP32 → OpenVINO IR FP32 (weights kept in FP32, not FP16)."""
    import openvino as ov
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def openvino_head(model):
    """``(matmul, add_or_None)``: the classifier that produces the ``logits`` result."""
    for result in model.get_results():
        if "logits" not in result.input_value(0).get_names():
            continue
        node = result.input_value(0).get_node()
        add = None
        if node.get_type_name() == "Add":
            add = node
            node = next((i.get_source_output().get_node() for i in add.inputs()
                         if i.get_source_output().get_node().get_type_name() == "MatMul"), None)
        if node is not None and node.get_type_name() == "MatMul":
            return node, add
    raise RuntimeError("the OpenVINO model has no MatMul producing 'logits'")


def quantize_openvino_int8(fp32_xml: Path, out_xml: Path, calibration: np.ndarray,
                           progress: Progress | None = None) -> QuantSummary:
    """NNCF post-training INT8 of the OpenVINO FP32 model, calibrated on ``calibration``."""
    import openvino as ov
    progress = progress or Progress(False)
    with quiet_libraries(progress.enabled):
        import nncf
        # NNCF's INFO lines are noise for our users; at ERROR it also hides its progress bars.
        nncf.set_log_level(logging.WARNING if progress.enabled else logging.ERROR)
        model = ov.Core().read_model(str(fp32_xml))
        matmul, _ = openvino_head(model)
        dataset = nncf.Dataset([calibration[i:i + 1] for i in range(len(calibration))])
        # NNCF draws its progress bars on stdout; stdout is for our reports, so send them to stderr.
        with contextlib.redirect_stdout(sys.stderr if progress.enabled else io.StringIO()):
            quantized = nncf.quantize(model, dataset, subset_size=len(calibration),
                                      ignored_scope=nncf.IgnoredScope(names=[matmul.get_friendly_name()]))
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(out_xml), compress_to_fp16=False)
    return openvino_quant_summary(quantized)


def openvino_quant_summary(model_or_path) -> QuantSummary:
    """Count convolutions whose activations pass a FakeQuantize and whose weights are stored
    as INT8 constants (how NNCF leaves a model; the CPU plugin runs them in INT8)."""
    import openvino as ov
    model = model_or_path if isinstance(model_or_path, ov.Model) else ov.Core().read_model(str(model_or_path))
    ops = Counter(op.get_type_name() for op in model.get_ordered_ops())

    def source(node, index=0):
        return node.input_value(index).get_node()

    def activation_quantized(node) -> bool:
        while node.get_type_name() in _OV_PASS_THROUGH:
            node = source(node)
        return node.get_type_name() == "FakeQuantize"

    def weight_int8(node) -> bool:
        # Constant(i8) → Convert → [Subtract] → Multiply, or a FakeQuantize on float weights.
        seen = 0
        while node.get_type_name() in ("Multiply", "Subtract", "Convert", "Reshape") and seen < 6:
            if node.get_type_name() == "Convert" and source(node).get_type_name() == "Constant":
                return source(node).get_output_element_type(0).get_type_name() in ("i8", "u8", "i4", "u4")
            node, seen = source(node), seen + 1
        return node.get_type_name() == "FakeQuantize"

    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    quantized = sum(1 for c in convs if activation_quantized(source(c, 0)) and weight_int8(source(c, 1)))
    return QuantSummary("openvino", len(convs), quantized, dict(ops))
