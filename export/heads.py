"""Swap the classifier of an exported (and quantized) model for another one.

Demo and test packs hold seven untrained models that differ only in their final layer, so
the backbone is exported and quantized once and each model gets its own head here. The
classifier stays in float in both INT8 graphs (see ``quantize.py``), so it is a plain float
weight and bias that can be replaced without touching the quantized parts.
"""
from __future__ import annotations

import numpy as np

from .quantize import onnx_head_node, openvino_head


def set_onnx_head(model, weight: np.ndarray, bias: np.ndarray) -> None:
    """Replace, in place, the ``logits`` classifier of an ONNX model: ``weight`` C×F, ``bias`` C."""
    from onnx import numpy_helper

    node = onnx_head_node(model)
    inits = {init.name: init for init in model.graph.initializer}
    transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
    weight_name = node.input[1]
    if weight_name not in inits:
        raise RuntimeError("the classifier's weight is not a plain initializer (was it quantized?)")
    _replace(inits[weight_name], weight if transposed else weight.T, numpy_helper)
    if node.op_type == "Gemm":
        bias_name = node.input[2]
    else:
        add = next(n for n in model.graph.node if "logits" in n.output)
        bias_name = next(i for i in add.input if i in inits)
    _replace(inits[bias_name], bias, numpy_helper)
    for value in list(model.graph.output) + list(model.graph.value_info):
        if value.name == "logits":
            value.type.tensor_type.shape.dim[-1].dim_value = int(weight.shape[0])


def _replace(init, array: np.ndarray, numpy_helper) -> None:
    init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), init.name))


def set_openvino_head(model, weight: np.ndarray, bias: np.ndarray) -> None:
    """Replace, in place, the ``logits`` classifier of an OpenVINO model: ``weight`` C×F, ``bias`` C."""
    import openvino.op as op

    matmul, add = openvino_head(model)
    transpose_b = bool(matmul.get_attributes().get("transpose_b", False))
    new_weight = op.Constant(np.ascontiguousarray(weight if transpose_b else weight.T, np.float32))
    matmul.input(1).replace_source_output(new_weight.output(0))
    if add is None:
        raise RuntimeError("the OpenVINO classifier has no bias Add")
    bias_input = next(i for i in add.inputs() if i.get_source_output().get_node().get_type_name() == "Constant")
    rank = len(bias_input.get_source_output().get_partial_shape())
    shaped = np.asarray(bias, np.float32).reshape((1,) * (rank - 1) + (-1,))
    bias_input.replace_source_output(op.Constant(np.ascontiguousarray(shaped)).output(0))
    model.validate_nodes_and_infer_types()
